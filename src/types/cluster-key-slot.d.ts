declare module 'cluster-key-slot' {
  /** The Redis Cluster slot (0–16383) of a key, hash tags honoured. */
  function generate(key: string | Buffer): number;
  export = generate;
}

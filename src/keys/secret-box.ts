import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * AES-256-GCM for the one secret the gateway must read back: an HMAC signing secret (HMAC is
 * symmetric, so a hash would not do). The key comes from `TOLLGATE_SECRET_KEY` (any string of 32+
 * characters, e.g. `openssl rand -base64 32`; it is hashed to 256 bits). Sealed values look like
 * `v1.<iv>.<tag>.<ciphertext>` (base64url); a fresh 96-bit IV per value.
 */
export class SecretBox {
  readonly #key: Buffer;
  /** True when the key was generated for this process (development): sealed values die with it. */
  readonly ephemeral: boolean;

  constructor(secret: string | undefined) {
    this.ephemeral = secret === undefined;
    this.#key = createHash('sha256')
      .update(secret ?? randomBytes(32))
      .digest();
  }

  seal(plaintext: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [
      'v1',
      iv.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
      ct.toString('base64url'),
    ].join('.');
  }

  /** The plaintext, or undefined when the value was sealed with another key or tampered with. */
  open(sealed: string): string | undefined {
    const [version, iv, tag, ct] = sealed.split('.');
    if (version !== 'v1' || iv === undefined || tag === undefined || ct === undefined) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64url'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString(
        'utf8',
      );
    } catch {
      return undefined;
    }
  }
}

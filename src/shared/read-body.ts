import type { Readable } from 'node:stream';

/**
 * Reads a stream into one Buffer, stopping at `limit` bytes: resolves `undefined` when the body
 * is larger, and then destroys the stream (`overflow: 'destroy'`, for upstream responses) or just
 * stops reading it (`'pause'`, for a client request that is still to be answered — with
 * `Connection: close`). Rejects if the stream fails or closes before its end.
 */
export function readLimited(
  stream: Readable,
  limit: number,
  overflow: 'destroy' | 'pause' = 'destroy',
): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        if (overflow === 'destroy') stream.destroy();
        else stream.pause();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      cleanup();
      const err = new Error('stream closed before its end') as NodeJS.ErrnoException;
      err.code = 'ECONNRESET';
      reject(err);
    };
    const cleanup = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}

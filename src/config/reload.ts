import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, resolve } from 'node:path';

/**
 * Watches a config file for changes. The directory is watched, not the file: editors replace a
 * file by renaming another over it, and a ConfigMap volume swaps the directory its files point
 * into — a watch on the file itself would miss both. Events are debounced and a content hash
 * filters out the ones that did not change the file.
 */
export function watchConfigFile(path: string, onChange: () => void, debounceMs = 150): () => void {
  const file = resolve(path);
  let lastHash: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const hashNow = async (): Promise<string | undefined> => {
    try {
      return createHash('sha256')
        .update(await readFile(file))
        .digest('hex');
    } catch {
      return undefined;
    }
  };
  try {
    // Synchronously: a change made right after start must not become the baseline.
    lastHash = createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    lastHash = undefined;
  }
  let watcher: FSWatcher | undefined;
  try {
    // Every event in the directory counts, not only those naming the file: a Kubernetes ConfigMap
    // changes by swapping a `..data` symlink the file points through, and the event names that.
    // The content hash below ignores events that did not change the file.
    watcher = watch(dirname(file), { persistent: false }, () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        void hashNow().then((h) => {
          // A read still in flight when the watch was stopped must not reload a stopping process.
          if (stopped || h === undefined || h === lastHash) return;
          lastHash = h;
          onChange();
        });
      }, debounceMs);
    });
  } catch {
    return () => undefined; // a directory that cannot be watched: SIGHUP still reloads
  }
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    watcher?.close();
  };
}

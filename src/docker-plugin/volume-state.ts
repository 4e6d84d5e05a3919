/**
 * The volume driver's bookkeeping, in `<state dir>/volumes.json` so that a restarted plugin still
 * answers Get/List/Path and knows which tmpfs mounts are its own. Names, clients and mount ids
 * only: no secret value is ever written here (or anywhere on disk).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

const volumeSchema = z.object({
  client: z.string(),
  size: z.string(),
  createdAt: z.string(),
  /** ids of the Mount calls not yet unmounted (dockerd passes one per container). */
  mounts: z.array(z.string()),
});
export type VolumeRecord = z.infer<typeof volumeSchema>;

const fileSchema = z.object({ volumes: z.record(z.string(), volumeSchema) });

export class VolumeState {
  private readonly file: string;
  readonly volumes = new Map<string, VolumeRecord>();

  constructor(
    readonly stateDir: string,
    log: (message: string) => void,
  ) {
    this.file = path.join(stateDir, 'volumes.json');
    let text: string | undefined;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text === undefined) return;
    try {
      const parsed = fileSchema.parse(JSON.parse(text));
      for (const [name, v] of Object.entries(parsed.volumes)) this.volumes.set(name, v);
    } catch {
      log(`${this.file} is unreadable; starting with no volumes (mounts under ${stateDir}/volumes are left as they are)`);
    }
  }

  /** Writes the whole state atomically (temp file, fsync, rename): a crash leaves the old or the new file. */
  save(): void {
    const temp = `${this.file}.${crypto.randomBytes(6).toString('hex')}.tmp`;
    const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    try {
      fs.writeSync(fd, JSON.stringify({ volumes: Object.fromEntries(this.volumes) }, null, 2) + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.renameSync(temp, this.file);
    } catch (err) {
      fs.rmSync(temp, { force: true });
      throw err;
    }
  }
}

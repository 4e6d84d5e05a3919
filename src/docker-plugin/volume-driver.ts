/**
 * `VolumeDriver`: a volume is a Keywarden client's secrets as files, the keywhiz-fs way.
 * `docker volume create -d <plugin> -o client=NAME VOL` records the volume (the broker must let
 * the plugin act for NAME); the first Mount puts a tmpfs at `<state dir>/volumes/VOL` and fills
 * it with every secret granted to NAME (mode/owner/group from the secret's metadata, written the
 * way `keywarden fetch` writes them); a timer keeps it current; the last Unmount, and Remove,
 * unmount the tmpfs, which is all there is to wipe. Values exist in memory (tmpfs) only.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeSecretFile } from '../cli/client/secret-files.js';
import { ConflictError, ForbiddenError, InvalidInputError, NotFoundError } from '../core/errors.js';
import { clampContext, type PluginBrokerApi, type PluginEvent, type SecretItem } from './broker-api.js';
import type { VolumeView } from './protocol.js';
import { isMountPoint, mountTmpfs, unmountTmpfs, validSize } from './tmpfs.js';
import { VolumeState, type VolumeRecord } from './volume-state.js';

const CLIENT_NAME = /^[A-Za-z0-9._-]{1,128}$/;
const KNOWN_OPTS = new Set(['client', 'size']);

export interface VolumeDriverOptions {
  stateDir: string;
  defaultSize: string;
  refreshIntervalMs: number;
  host: string;
  report: (event: PluginEvent) => void;
  log: (message: string) => void;
}

export class VolumeDriver {
  private readonly state: VolumeState;
  private readonly volumesDir: string;
  /** Per mounted volume: secret name → what was written (version, checksum, metadata). */
  private readonly written = new Map<string, Map<string, string>>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private timer?: NodeJS.Timeout;
  private refreshing = false;

  constructor(
    private readonly broker: PluginBrokerApi,
    private readonly options: VolumeDriverOptions,
  ) {
    fs.mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
    this.volumesDir = path.join(options.stateDir, 'volumes');
    fs.mkdirSync(this.volumesDir, { recursive: true, mode: 0o700 });
    this.state = new VolumeState(options.stateDir, options.log);
    // after a restart: mounts that are gone (host reboot) are forgotten; live ones are refreshed
    let changed = false;
    for (const [name, rec] of this.state.volumes) {
      if (rec.mounts.length && !isMountPoint(this.dirOf(name))) {
        rec.mounts = [];
        changed = true;
      }
    }
    if (changed) this.state.save();
  }

  /** Starts the refresh timer (and refreshes mounts a previous run left). */
  start(): void {
    this.timer = setInterval(() => void this.refreshAll(), this.options.refreshIntervalMs);
    this.timer.unref();
    void this.refreshAll();
  }

  /** Stops refreshing. Mounts stay: running containers keep their files. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  dirOf(name: string): string {
    return path.join(this.volumesDir, name);
  }

  private record(name: string): VolumeRecord {
    const rec = this.state.volumes.get(name);
    if (!rec) throw new NotFoundError(`volume ${name}`, { code: 'no_such_volume', detail: `no such volume: ${name}` });
    return rec;
  }

  private mounted(name: string, rec: VolumeRecord): boolean {
    return rec.mounts.length > 0 && isMountPoint(this.dirOf(name));
  }

  private view(name: string, rec: VolumeRecord): VolumeView {
    const mounted = this.mounted(name, rec);
    return { Name: name, Mountpoint: mounted ? this.dirOf(name) : '', Status: { client: rec.client, mounted, mounts: rec.mounts.length } };
  }

  private context(volume: string, container?: string) {
    return clampContext({ source: 'volume', volume, container, host: this.options.host });
  }

  /** One operation at a time per volume: dockerd may mount a volume for two containers at once. */
  private withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(name, settled);
    void settled.then(() => {
      if (this.locks.get(name) === settled) this.locks.delete(name);
    });
    return next;
  }

  async create(name: string, opts: Record<string, string>): Promise<void> {
    const unknown = Object.keys(opts).filter((k) => !KNOWN_OPTS.has(k));
    if (unknown.length) throw new InvalidInputError(`unknown volume option(s): ${unknown.join(', ')} (known: client, size)`);
    const client = opts.client;
    if (!client) throw new InvalidInputError('the volume option client is required (-o client=NAME: the Keywarden client whose secrets the volume holds)');
    if (!CLIENT_NAME.test(client)) throw new InvalidInputError(`client is not a Keywarden client name: ${JSON.stringify(client.slice(0, 140))}`);
    const size = opts.size ?? this.options.defaultSize;
    if (!validSize(size)) throw new InvalidInputError(`size must be a tmpfs size such as 1m or 512k (at most 1g): ${JSON.stringify(size.slice(0, 40))}`);
    await this.withLock(name, async () => {
      const existing = this.state.volumes.get(name);
      if (existing && existing.client !== client) throw new ConflictError(`volume ${name} exists for client ${existing.client}`, 'volume_exists');
      // may the plugin act for this client? (403 not_delegated from the broker otherwise; audited there)
      await this.broker.listSecrets(client, false, this.context(name));
      if (existing) return;
      this.state.volumes.set(name, { client, size, createdAt: new Date().toISOString(), mounts: [] });
      this.state.save();
    });
  }

  async remove(name: string): Promise<void> {
    await this.withLock(name, async () => {
      this.record(name);
      await this.wipe(name);
      this.state.volumes.delete(name);
      this.state.save();
    });
  }

  async mount(name: string, id: string): Promise<string> {
    return this.withLock(name, async () => {
      const rec = this.record(name);
      const dir = this.dirOf(name);
      if (this.mounted(name, rec)) {
        // a second container: the broker still decides whether the plugin may act for the client
        await this.broker.listSecrets(rec.client, false, this.context(name, id));
      } else {
        // a tmpfs left from a run that lost track of it would be shadowed, not replaced
        if (isMountPoint(dir)) await unmountTmpfs(dir);
        await mountTmpfs(dir, rec.size);
        try {
          const items = await this.broker.listSecrets(rec.client, true, this.context(name, id));
          this.written.set(name, new Map());
          await this.sync(name, rec, items);
        } catch (err) {
          await this.wipe(name);
          throw err;
        }
      }
      if (!rec.mounts.includes(id)) rec.mounts.push(id);
      this.state.save();
      return dir;
    });
  }

  async unmount(name: string, id: string): Promise<void> {
    await this.withLock(name, async () => {
      const rec = this.record(name);
      rec.mounts = rec.mounts.filter((m) => m !== id);
      if (!rec.mounts.length) await this.wipe(name);
      this.state.save();
    });
  }

  path(name: string): string {
    const rec = this.record(name);
    return this.mounted(name, rec) ? this.dirOf(name) : '';
  }

  get(name: string): VolumeView {
    return this.view(name, this.record(name));
  }

  list(): VolumeView[] {
    return [...this.state.volumes].map(([name, rec]) => this.view(name, rec));
  }

  /** Unmounts the tmpfs (freeing its pages is the wipe) and removes the directory. */
  private async wipe(name: string): Promise<void> {
    this.written.delete(name);
    const rec = this.state.volumes.get(name);
    if (rec) rec.mounts = [];
    await unmountTmpfs(this.dirOf(name));
  }

  /**
   * Makes the mount hold exactly the granted secrets: writes what is new or changed (by version,
   * checksum and metadata), deletes what is no longer granted. `items` without content are read
   * one by one (each an audited read).
   */
  private async sync(name: string, rec: VolumeRecord, items: SecretItem[]): Promise<void> {
    const dir = this.dirOf(name);
    const written = this.written.get(name) ?? new Map<string, string>();
    this.written.set(name, written);
    const keep = new Set<string>();
    for (const item of items) {
      keep.add(item.name);
      const stamp = JSON.stringify([item.version, item.checksum, item.metadata]);
      if (written.get(item.name) === stamp) continue;
      try {
        const content = item.content ?? (await this.broker.readSecret(rec.client, item.name, this.context(name))).content;
        writeSecretFile(dir, item.name, content, item.metadata, { warn: (m) => this.options.log(`volume ${name}: ${m}`) });
        written.set(item.name, stamp);
      } catch (err) {
        if (err instanceof ForbiddenError) throw err;
        this.options.log(`volume ${name}: secret ${item.name} not written: ${(err as Error).message}`);
      }
    }
    // the tmpfs is the plugin's alone: anything else in it (a revoked secret, a stale temp file) goes
    for (const entry of fs.readdirSync(dir)) {
      if (keep.has(entry) && written.has(entry)) continue;
      fs.rmSync(path.join(dir, entry), { force: true, recursive: true });
      written.delete(entry);
    }
  }

  /** One refresh round over every mounted volume: list without content, re-read what changed. */
  async refreshAll(): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      for (const [name, rec] of [...this.state.volumes]) {
        if (!rec.mounts.length) continue;
        await this.withLock(name, async () => {
          if (!this.mounted(name, rec)) return;
          try {
            await this.sync(name, rec, await this.broker.listSecrets(rec.client, false, this.context(name)));
          } catch (err) {
            if (err instanceof ForbiddenError) {
              // the plugin may no longer act for the client: its files leave the mount
              this.options.log(`volume ${name}: ${err.message}; removing its files`);
              await this.sync(name, rec, []).catch(() => undefined);
            } else {
              this.options.log(`volume ${name}: refresh failed, keeping the current files: ${(err as Error).message}`);
            }
          }
        });
      }
    } finally {
      this.refreshing = false;
    }
  }
}

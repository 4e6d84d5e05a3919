import { spawnSync } from 'node:child_process';

/** Debian's python3-hvac runs under the system interpreter, not a pyenv python3 on PATH. */
export const SYSTEM_PYTHON = process.env.KEYWARDEN_SYSTEM_PYTHON ?? '/usr/bin/python3';

/**
 * Whether hvac can be imported by the system Python; when not, the reason is printed once.
 * With KEYWARDEN_REQUIRE_TOOLS=1 (CI, which installs python3-hvac) a missing hvac fails instead.
 */
export function hvacAvailable(): { ok: boolean; reason?: string } {
  const probe = spawnSync(SYSTEM_PYTHON, ['-c', 'import hvac'], { encoding: 'utf8' });
  if (probe.status === 0) return { ok: true };
  const reason = `hvac not importable by ${SYSTEM_PYTHON} (apt-get install python3-hvac): ${(probe.stderr || String(probe.error ?? '')).trim().split('\n').pop()}; skipping the hvac tests`;
  if (process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error(reason);
  console.warn(reason);
  return { ok: false, reason };
}

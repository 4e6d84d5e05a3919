/**
 * stderr output for the client commands. Every line goes through `redact`, which replaces any
 * registered sensitive string (credentials, fetched secret values) as a last line of defence:
 * messages are built from names and codes only, never from values.
 */
const sensitive = new Set<string>();

/** Values shorter than this are not scrubbed (they would garble ordinary words). */
const MIN_REDACT_LENGTH = 4;

export function registerSensitive(value: string | undefined): void {
  if (value && value.length >= MIN_REDACT_LENGTH) sensitive.add(value);
}

export function redact(text: string): string {
  let out = text;
  for (const value of sensitive) if (out.includes(value)) out = out.split(value).join('[redacted]');
  return out;
}

export function warn(message: string): void {
  process.stderr.write(redact(`keywarden: ${message}`) + '\n');
}

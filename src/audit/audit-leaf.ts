import { leafHash } from './merkle.js';
import type { AuditEvent } from './audit-types.js';
import { leafData } from './audit-leaf-data.js';

/** RFC 6962 leaf hash of an event, hex. */
export function eventLeafHash(event: AuditEvent): string {
  return leafHash(leafData(event)).toString('hex');
}

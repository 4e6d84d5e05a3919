import { ForbiddenError, IntegrityFailureError } from '../core/errors.js';
import { actorOf, type RequestMeta, type ClientPrincipal } from '../core/principal.js';
import type { AuditService } from './audit-service.js';
import type { AuditOutcome } from './audit-types.js';

/** One thing the Docker plugin did that reached no other broker route (a volume Path, an authz allow of a read). */
export interface PluginEvent {
  action: string;
  outcome: AuditOutcome;
  resource?: { kind: string; name: string };
  reason?: string;
  details?: Record<string, unknown>;
}

/**
 * The Docker plugin's own audit events. Only a client an admin made a delegate (actsFor not
 * empty, or releaseGate) may report them, and each is recorded as that client's, marked
 * `reportedBy: 'docker-plugin'` so nobody mistakes it for something the broker decided.
 */
export class PluginEventsService {
  constructor(
    private readonly deps: {
      audit: AuditService;
      /** identity decides what a client may do (ClientsService.capabilitiesOf) */
      clientCapabilities: { capabilitiesOf(clientDbId: number): Promise<{ actsFor: string[]; releaseGate: boolean }> };
    },
  ) {}

  async report(principal: ClientPrincipal, meta: RequestMeta, events: PluginEvent[]): Promise<number> {
    const { actsFor, releaseGate } = await this.deps.clientCapabilities.capabilitiesOf(principal.id).catch(async (err: unknown) => {
      // a delegation set outside the broker (its MAC does not verify): refused, and on the record
      if (err instanceof IntegrityFailureError) {
        await this.deps.audit.record({ actor: actorOf(principal), action: 'authz.deny', resource: { kind: 'route', name: 'POST /v1/client/docker-plugin/events' }, outcome: 'error', reason: err.detail, details: { integrity: 'row_mac' }, request: meta });
      }
      throw err;
    });
    if (actsFor.length === 0 && !releaseGate) {
      const reason = 'only a client with actsFor or releaseGate (the Docker plugin) may report plugin events';
      await this.deps.audit.record({ actor: actorOf(principal), action: 'authz.deny', resource: { kind: 'route', name: 'POST /v1/client/docker-plugin/events' }, outcome: 'deny', reason, request: meta });
      throw new ForbiddenError(reason, 'not_a_plugin');
    }
    // one transaction for the whole report (the group commit of the read path): all or none
    const recorded = await this.deps.audit.recordReads(
      events.map((e) => ({
        actor: actorOf(principal),
        action: e.action,
        resource: e.resource ?? null,
        outcome: e.outcome,
        reason: e.reason ?? null,
        details: { ...e.details, reportedBy: 'docker-plugin' },
        request: meta,
      })),
      [],
    );
    return recorded.length;
  }
}

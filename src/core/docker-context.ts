import { z } from 'zod';

const contextValue = z.string().max(256);

/**
 * What the Docker plugin knows about the container a call is for (issue 13). It only names
 * things for the audit record and the decision: it grants nothing, so the broker takes it as
 * the plugin reports it.
 */
export const dockerContextSchema = z
  .object({
    source: z.enum(['secretprovider', 'volume', 'authz']).optional(),
    secretName: contextValue.optional(),
    service: contextValue.optional(),
    serviceId: contextValue.optional(),
    task: contextValue.optional(),
    taskId: contextValue.optional(),
    image: contextValue.optional(),
    volume: contextValue.optional(),
    container: contextValue.optional(),
    host: contextValue.optional(),
  })
  .strict()
  .describe('Where the Docker plugin call came from (swarm service, task, image, volume, container); recorded with the audit event.');

export type DockerContext = z.infer<typeof dockerContextSchema>;

/** The context as audit details: only the members that were given. */
export function contextDetails(context: DockerContext | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(context ?? {}).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/**
 * The Docker Engine plugin protocol as dockerd speaks it (docker/go-plugins-helpers:
 * sdk/handler.go, secrets/api.go, volume/api.go, authorization/api.go; swarmkit's secret driver
 * for `DoNotReuse`). Requests come from dockerd, so unknown members are tolerated (newer engines
 * add some), but every member we read is type-checked.
 */
import { z } from 'zod';

export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

export const IMPLEMENTS = ['secretprovider', 'VolumeDriver', 'authz'] as const;

const stringMap = z.record(z.string(), z.string());

/** secrets/api.go Request (swarmkit also sends NodeID and ServiceEndpointSpec; not read). */
export const getSecretRequestSchema = z
  .object({
    SecretName: z.string().min(1).max(1024),
    SecretLabels: stringMap.nullish(),
    ServiceHostname: z.string().nullish(),
    ServiceName: z.string().nullish(),
    ServiceID: z.string().nullish(),
    ServiceLabels: stringMap.nullish(),
    TaskID: z.string().nullish(),
    TaskName: z.string().nullish(),
    TaskImage: z.string().nullish(),
  })
  .passthrough();
export type GetSecretRequest = z.infer<typeof getSecretRequestSchema>;

/** Volume names become a directory under the state dir: one plain path component. */
export const volumeNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'volume names must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$');

/** volume/api.go Request (`Opts` only on Create). */
export const volumeRequestSchema = z.object({ Name: volumeNameSchema, Opts: stringMap.nullish() }).passthrough();
/** volume/api.go MountRequest / UnmountRequest: `ID` names the caller (a container). */
export const volumeMountRequestSchema = z.object({ Name: volumeNameSchema, ID: z.string().min(1).max(256) }).passthrough();

/** authorization/api.go Request: bodies are Go []byte, so base64 in JSON. */
export const authzRequestSchema = z
  .object({
    User: z.string().nullish(),
    UserAuthNMethod: z.string().nullish(),
    RequestMethod: z.string().min(1).max(16),
    RequestUri: z.string().min(1).max(8192),
    RequestBody: z.string().nullish(),
    RequestHeaders: stringMap.nullish(),
  })
  .passthrough();
export type AuthzRequest = z.infer<typeof authzRequestSchema>;

export interface AuthzResponse {
  Allow: boolean;
  Msg?: string;
  Err?: string;
}

export interface VolumeView {
  Name: string;
  Mountpoint?: string;
  Status?: Record<string, unknown>;
}

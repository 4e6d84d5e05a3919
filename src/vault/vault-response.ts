/**
 * Vault's response envelope: every successful answer has these members, null where unused
 * (clients read `data`, `auth` or `warnings`, and some check that the others are present).
 */
export function vaultResponse(requestId: string, parts: { data?: unknown; auth?: unknown; warnings?: string[] | null; mountType?: string }) {
  return {
    request_id: requestId,
    lease_id: '',
    renewable: false,
    lease_duration: 0,
    data: parts.data ?? null,
    wrap_info: null,
    warnings: parts.warnings ?? null,
    auth: parts.auth ?? null,
    mount_type: parts.mountType ?? '',
  };
}

import YAML from 'yaml';

/**
 * The browsable API reference at /docs, rendered once on the server from openapi.yaml: plain
 * HTML, no script, no third-party renderer. (Swagger UI's npm package pulls in an install
 * script that reports to a third party; installing Keywarden must send nothing anywhere.)
 */

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

type Json = any;

function escapeHtml(text: unknown): string {
  return String(text ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function anchor(kind: string, name: string): string {
  return `${kind}-${name.replace(/[^A-Za-z0-9_-]/g, '-')}`;
}

/** A schema as one line: a link for a $ref, otherwise its type. */
function schemaLabel(schema: Json): string {
  if (!schema || typeof schema !== 'object') return '';
  if (typeof schema.$ref === 'string') {
    const name = schema.$ref.split('/').pop() ?? schema.$ref;
    return `<a href="#${anchor('schema', name)}">${escapeHtml(name)}</a>`;
  }
  if (schema.type === 'array') return `array of ${schemaLabel(schema.items) || 'any'}`;
  for (const key of ['oneOf', 'anyOf', 'allOf'] as const) {
    if (Array.isArray(schema[key])) return `${key}(${schema[key].map(schemaLabel).join(', ')})`;
  }
  const type = Array.isArray(schema.type) ? schema.type.join(' | ') : (schema.type ?? 'object');
  return escapeHtml(schema.enum ? `${type}: ${schema.enum.join(' | ')}` : type);
}

function resolve(spec: Json, node: Json): Json {
  let current = node;
  for (let depth = 0; current && typeof current.$ref === 'string' && depth < 10; depth++) {
    current = current.$ref
      .replace(/^#\//, '')
      .split('/')
      .reduce((n: Json, part: string) => n?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], spec);
  }
  return current;
}

function contentList(content: Json): string {
  return Object.entries<Json>(content ?? {})
    .map(([type, media]) => `<code>${escapeHtml(type)}</code> ${schemaLabel(media?.schema)}`)
    .join('<br>');
}

function operationHtml(spec: Json, path: string, method: string, op: Json, pathItem: Json): string {
  const access = op['x-keywarden-access'];
  const params = [...(pathItem.parameters ?? []), ...(op.parameters ?? [])].map((p: Json) => resolve(spec, p)).filter(Boolean);
  const body = op.requestBody ? resolve(spec, op.requestBody) : undefined;
  const rows = Object.entries<Json>(op.responses ?? {}).map(([status, r]) => {
    const response = resolve(spec, r) ?? {};
    return `<tr><td>${escapeHtml(status)}</td><td>${escapeHtml(response.description)}</td><td>${contentList(response.content)}</td></tr>`;
  });
  return `<section class="op" id="${anchor('op', op.operationId ?? `${method}-${path}`)}">
<h3><span class="method">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code> ${escapeHtml(op.summary)}</h3>
<p class="access">Access: ${escapeHtml(Array.isArray(access) ? access.join(', ') : access)}</p>
${op.description ? `<div class="text">${escapeHtml(op.description)}</div>` : ''}
${params.length ? `<table><tr><th>Parameter</th><th>In</th><th>Schema</th><th>Description</th></tr>${params
    .map((p: Json) => `<tr><td><code>${escapeHtml(p.name)}</code>${p.required ? ' *' : ''}</td><td>${escapeHtml(p.in)}</td><td>${schemaLabel(p.schema)}</td><td>${escapeHtml(p.description)}</td></tr>`)
    .join('')}</table>` : ''}
${body ? `<p>Request body${body.required ? ' (required)' : ''}: ${contentList(body.content)}</p>` : ''}
<table><tr><th>Status</th><th>Description</th><th>Body</th></tr>${rows.join('')}</table>
</section>`;
}

export function renderDocsPage(specText: string): string {
  const spec: Json = YAML.parse(specText);
  const tags: Array<{ name: string; description?: string }> = spec.tags ?? [];
  const byTag = new Map<string, string[]>(tags.map((t) => [t.name, []]));
  for (const [path, pathItem] of Object.entries<Json>(spec.paths ?? {})) {
    for (const method of METHODS) {
      const op = pathItem?.[method];
      if (!op) continue;
      const tag = op.tags?.[0] ?? 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag)!.push(operationHtml(spec, path, method, op, pathItem));
    }
  }
  const sections = [...byTag.entries()]
    .filter(([, ops]) => ops.length)
    .map(([name, ops]) => {
      const description = tags.find((t) => t.name === name)?.description;
      return `<h2 id="${anchor('tag', name)}">${escapeHtml(name)}</h2>${description ? `<p>${escapeHtml(description)}</p>` : ''}${ops.join('\n')}`;
    });
  const schemas = Object.entries<Json>(spec.components?.schemas ?? {}).map(
    ([name, schema]) => `<section id="${anchor('schema', name)}"><h3>${escapeHtml(name)}</h3><pre>${escapeHtml(YAML.stringify(schema))}</pre></section>`,
  );
  const toc = [...byTag.entries()].filter(([, ops]) => ops.length).map(([name]) => `<a href="#${anchor('tag', name)}">${escapeHtml(name)}</a>`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(spec.info?.title)} API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:0 auto;padding:1rem 2rem;color:#1d2330}
code,pre{font-family:ui-monospace,monospace}pre{background:#f4f5f7;padding:.75rem;overflow:auto}
.op{border:1px solid #d8dce3;border-radius:6px;padding:.25rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:4.5rem;font-weight:600}.access{color:#5a6272;margin:0}
.text{white-space:pre-wrap}table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d8dce3;padding:.2rem .5rem;text-align:left;vertical-align:top}
nav a{margin-right:1rem}
</style></head>
<body><h1>${escapeHtml(spec.info?.title)} API <small>${escapeHtml(spec.info?.version)}</small></h1>
<p>The machine-readable description is <a href="/openapi.yaml">/openapi.yaml</a>.</p>
<nav>${toc.join(' ')} <a href="#schemas">schemas</a></nav>
<div class="text">${escapeHtml(spec.info?.description)}</div>
${sections.join('\n')}
<h2 id="schemas">Schemas</h2>
${schemas.join('\n')}
</body></html>`;
}

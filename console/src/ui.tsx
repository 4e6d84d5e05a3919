import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';

/** Hash routes: #/view/sub?query. */
export interface Route {
  view: string;
  sub: string;
  query: URLSearchParams;
}

export function parseRoute(hash: string): Route {
  const h = hash.replace(/^#\/?/, '');
  const [path = '', q = ''] = h.split('?');
  const [view = 'overview', ...rest] = path.split('/');
  return { view: view || 'overview', sub: rest.map(decodeURIComponent).join('/'), query: new URLSearchParams(q) };
}

export function href(view: string, query?: Record<string, string | number | undefined | null>, sub?: string): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return `#/${view}${sub ? '/' + encodeURIComponent(sub) : ''}${s ? '?' + s : ''}`;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

/** Loads data for a view; `deps` reload it. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data?: T; error?: Error; loading: boolean; reload: () => void } {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ data: s.data, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (error: Error) => live && setState({ error, loading: false }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export function Loaded<T>(props: { state: { data?: T; error?: Error; loading: boolean }; children: (data: T) => ComponentChildren }) {
  const { data, error, loading } = props.state;
  if (error) return <p class="error" role="alert">Could not load: {error.message}</p>;
  if (data === undefined) return loading ? <p class="muted" role="status">Loading…</p> : null;
  return <>{props.children(data)}</>;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** ISO-like local-free UTC time: 2026-12-01 10:56:05 UTC. */
export function fmtTime(t: string | number | null | undefined): string {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

export function fmtAge(t: string | number | null | undefined, now = Date.now()): string {
  if (t === null || t === undefined) return 'never';
  const ms = now - new Date(t).getTime();
  if (Number.isNaN(ms)) return '—';
  const s = Math.round(Math.abs(ms) / 1000);
  const v = s < 60 ? `${s} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 86400 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
  return ms >= 0 ? `${v} ago` : `in ${v}`;
}

export function Badge(props: { kind: string; children: ComponentChildren }) {
  return <span class={`badge badge-${props.kind}`}>{props.children}</span>;
}

export function Outcome(props: { value: string }) {
  return <Badge kind={props.value}>{props.value}</Badge>;
}

/** Hand-drawn SVG bar chart: one bar per bucket, an accessible table summary beside it. */
export function BarChart(props: { title: string; values: number[]; bucketSeconds: number; from: string; kind: string }) {
  const { values } = props;
  const max = Math.max(1, ...values);
  const total = values.reduce((a, b) => a + b, 0);
  const w = 300;
  const h = 64;
  const bw = w / Math.max(1, values.length);
  const id = `chart-${props.kind}`;
  return (
    <figure class="chart" aria-labelledby={id}>
      <figcaption id={id}>
        <span>{props.title}</span> <strong data-testid={`total-${props.kind}`}>{total}</strong>
      </figcaption>
      <svg viewBox={`0 0 ${w} ${h}`} role="img" aria-label={`${props.title}: ${total} in total, at most ${max === 1 && total === 0 ? 0 : max} per bucket`} preserveAspectRatio="none">
        <line x1="0" y1={h - 0.5} x2={w} y2={h - 0.5} class="axis" />
        {values.map((v, i) => {
          const bh = v === 0 ? 0 : Math.max(2, (v / max) * (h - 4));
          const start = new Date(new Date(props.from).getTime() + i * props.bucketSeconds * 1000);
          return (
            <rect class={`bar bar-${props.kind}`} x={i * bw + bw * 0.1} y={h - bh} width={bw * 0.8} height={bh}>
              <title>{`${fmtTime(start.toISOString())}: ${v}`}</title>
            </rect>
          );
        })}
      </svg>
    </figure>
  );
}

/** A download of text built in the browser (Blob URL: no second request, no inline script). */
export function download(name: string, type: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function Json(props: { value: unknown }) {
  return <pre class="json">{JSON.stringify(props.value, null, 2)}</pre>;
}

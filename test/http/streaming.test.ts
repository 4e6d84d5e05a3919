import type { Response } from 'express';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { streamLines } from '../../src/http/streaming.js';

/**
 * The exports write line by line and wait for the socket to drain. A client that stops reading
 * and goes away must end the export (its source closed), not leave it waiting for good; so must
 * one that keeps the connection but reads nothing (it would hold an audit pass slot).
 */
describe('streamLines', () => {
  it('sends every line and ends the answer', async () => {
    // a bare node:http server: streamLines needs only the ServerResponse that Express extends
    const server = http.createServer(async (_req, res) => {
      async function* lines() {
        for (let i = 0; i < 3; i++) yield `line ${i}\n`;
      }
      await streamLines(res as unknown as Response, lines());
    });
    server.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
      expect(await res.text()).toBe('line 0\nline 1\nline 2\n');
    } finally {
      server.close();
    }
  });

  it('ends the source when the client goes away while the socket is full', async () => {
    let produced = 0;
    let sourceClosed!: () => void;
    const closed = new Promise<void>((r) => (sourceClosed = r));
    let handlerDone!: () => void;
    const finished = new Promise<void>((r) => (handlerDone = r));
    const server = http.createServer(async (_req, res) => {
      async function* lines() {
        try {
          // far more than the socket buffers hold: the writer must wait for 'drain'
          for (;;) {
            produced++;
            yield 'x'.repeat(64 * 1024) + '\n';
          }
        } finally {
          sourceClosed();
        }
      }
      await streamLines(res as unknown as Response, lines());
      handlerDone();
    });
    server.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const port = (server.address() as AddressInfo).port;
      await new Promise<void>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/' }, (res) => {
          // read one chunk, stop reading, then hang up
          res.once('data', () => {
            res.pause();
            setTimeout(() => {
              req.destroy();
              resolve();
            }, 200);
          });
        });
      });
      await Promise.race([Promise.all([closed, finished]), new Promise((_, reject) => setTimeout(() => reject(new Error('the export kept waiting after the client left')), 5_000))]);
      // it waited for the socket instead of producing without bound
      expect(produced).toBeLessThan(1000);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('drops a client that keeps the connection open but stops reading, after the stall timeout', async () => {
    let sourceClosed!: () => void;
    const closed = new Promise<void>((r) => (sourceClosed = r));
    let handlerDone!: () => void;
    const finished = new Promise<void>((r) => (handlerDone = r));
    let serverSocket: Socket | null = null;
    const server = http.createServer(async (_req, res) => {
      serverSocket = res.socket;
      async function* lines() {
        try {
          for (;;) yield 'x'.repeat(64 * 1024) + '\n';
        } finally {
          sourceClosed();
        }
      }
      await streamLines(res as unknown as Response, lines(), 300);
      handlerDone();
    });
    server.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const port = (server.address() as AddressInfo).port;
      // read one chunk, then stop reading without hanging up
      const req = http.get({ host: '127.0.0.1', port, path: '/' }, (res) => res.once('data', () => res.pause()));
      req.on('error', () => undefined);
      await Promise.race([Promise.all([closed, finished]), new Promise((_, reject) => setTimeout(() => reject(new Error('the export kept waiting for a client that reads nothing')), 5_000))]);
      // the server dropped the connection (the client never hung up)
      expect(req.destroyed).toBe(false);
      expect(serverSocket!.destroyed).toBe(true);
      req.destroy();
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

#!/usr/bin/env node
// Publish one ingestion batch to lookalike's workers from Node.js, with no dependencies:
// a few lines of Redis protocol (RESP) over a socket, and the Celery message (protocol 2,
// JSON body, kombu's Redis transport envelope) that services/queue.py documents.
//
//   node enqueue.js --redis redis://127.0.0.1:6379/0 --job app-42 --collection images \
//        [--source app] [--tag t]... REF...
//
// Each REF is a local path (as the workers see it), s3://bucket/key or https://URL. It prints
// the task id. Outcomes: docs/apps.md ("Learning each image's outcome").
"use strict";

const crypto = require("crypto");
const net = require("net");
const os = require("os");

const QUEUE = "lookalike.ingest";
const TASK_INGEST = "lookalike.ingest_batch";

function taskMessage(jobId, batchId, items, collection, source, tags) {
  const id = crypto.randomUUID();
  const args = [jobId, batchId, items, collection, source, tags];
  const embed = { callbacks: null, errbacks: null, chain: null, chord: null };
  return {
    body: Buffer.from(JSON.stringify([args, {}, embed])).toString("base64"),
    "content-encoding": "utf-8",
    "content-type": "application/json",
    headers: {
      lang: "py", task: TASK_INGEST, id, shadow: null, eta: null, expires: null,
      group: null, group_index: null, retries: 0, timelimit: [null, null],
      root_id: id, parent_id: null, argsrepr: JSON.stringify(args).slice(0, 1024),
      kwargsrepr: "{}", origin: `${process.pid}@${os.hostname()}`, ignore_result: true,
      replaced_task_nesting: 0, stamped_headers: null, stamps: {},
    },
    properties: {
      correlation_id: id, reply_to: "", delivery_mode: 2,
      delivery_info: { exchange: "", routing_key: QUEUE }, priority: 0,
      body_encoding: "base64", delivery_tag: crypto.randomUUID(),
    },
  };
}

function resp(...words) {
  const parts = words.map((w) => Buffer.from(String(w)));
  return Buffer.concat([
    Buffer.from(`*${parts.length}\r\n`),
    ...parts.flatMap((p) => [Buffer.from(`$${p.length}\r\n`), p, Buffer.from("\r\n")]),
  ]);
}

// Send commands one after another; resolve with each reply line (errors reject).
function redisCommands(url, commands) {
  const { hostname, port, pathname, password } = new URL(url);
  const db = (pathname || "/0").slice(1) || "0";
  const all = [...(password ? [["AUTH", decodeURIComponent(password)]] : []), ["SELECT", db], ...commands];
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port || 6379), hostname || "127.0.0.1");
    let buffered = "";
    const replies = [];
    socket.on("connect", () => socket.write(Buffer.concat(all.map((c) => resp(...c)))));
    socket.on("data", (chunk) => {
      buffered += chunk.toString();
      let end;
      while ((end = buffered.indexOf("\r\n")) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (line.startsWith("-")) { socket.destroy(); reject(new Error(line.slice(1))); return; }
        replies.push(line);
      }
      if (replies.length === all.length) { socket.end(); resolve(replies); }
    });
    socket.on("error", reject);
  });
}

async function main(argv) {
  const options = { redis: "redis://127.0.0.1:6379/0", job: "", collection: "images", source: "", tag: [] };
  const refs = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith("--") ? argv[i].slice(2) : null;
    if (name === null) refs.push(argv[i]);
    else if (name === "tag") options.tag.push(argv[++i]);
    else options[name] = argv[++i];
  }
  if (!options.job || refs.length === 0) throw new Error("usage: enqueue.js --job JOB [options] REF...");
  // size and change unknown to the app: -1 and "" (the worker reads what is there).
  const items = refs.map((ref) => [ref, -1, ""]);
  const message = taskMessage(options.job, `app-${Date.now()}`, items, options.collection, options.source, options.tag);
  await redisCommands(options.redis, [["LPUSH", QUEUE, JSON.stringify(message)]]);
  console.log(message.headers.id);
}

main(process.argv.slice(2)).catch((error) => { console.error(`error: ${error.message}`); process.exit(1); });

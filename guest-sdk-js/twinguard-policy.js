// twinguard-policy: write twinguard policies in JavaScript, built into components with
// componentize-js against wit/policy.wit (twinguard:policy@0.2.0, world `policy`).
//
// A policy is a class with `init(config)` (check settings, declare what it reads) and
// `evaluate(msg)` (return a Decision); the app module ends with
// `export const handler = exportPolicy(MyPolicy);`. The names and texts follow the Rust SDK
// (guest-sdk/), so a port answers as the Rust policy does.

import * as host from 'twinguard:policy/host@0.2.0';

/** Severities, lowest first. */
export const Severity = Object.freeze({
  INFO: 'info',
  LOW: 'low',
  MEDIUM: 'medium',
  HIGH: 'high',
  CRITICAL: 'critical',
});

/** Envelope parts a policy reads on every message (combine with `|`). */
export const Envelope = Object.freeze({ NONE: 0, DEVICE_ID: 1, TOPIC: 2 });

/** An error `init` throws to refuse its settings: the load fails with its text. */
export class PolicyError extends Error {}

const MAX_FIELDS = 64;
const MAX_KEEP_LAST = 16;
const MAX_METRICS = 32;

// ---------------------------------------------------------------------------------------------
// Text: Rust's `{:?}` quoting, Quoted, Clipped, Described.

const ESCAPES = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\0': '\\0' };
// Control, format (bidirectional overrides, zero-width), separator and non-ASCII space
// characters, and private use: what Rust's Debug escapes as \u{…}. Written as ranges: the
// engine inside the component has no Unicode property classes.
const UNPRINTABLE =
  /[\u0000-\u001f\u007f-\u00a0\u00ad\u0600-\u0605\u061c\u06dd\u070f\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u3000\ue000-\uf8ff\ufeff\ufff9-\ufffb]/;

/** `text` in Rust string syntax (`"a\"b"`), as `{:?}` writes it. */
export function debugString(text) {
  let out = '"';
  for (const ch of text) {
    if (ESCAPES[ch] !== undefined) {
      out += ESCAPES[ch];
    } else if (UNPRINTABLE.test(ch)) {
      out += '\\u{' + ch.codePointAt(0).toString(16) + '}';
    } else {
      out += ch;
    }
  }
  return out + '"';
}

function cut(text, maxChars) {
  const chars = Array.from(text);
  return chars.length > maxChars ? chars.slice(0, maxChars).join('') : null;
}

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/** Device-supplied text quoted and cut to 80 characters (`... (N bytes)` when cut). */
export function quoted(text) {
  const head = cut(text, 80);
  return head === null ? debugString(text) : `${debugString(head)}... (${utf8Length(text)} bytes)`;
}

/** Readable text (a parser's error) cut to 320 characters, `...` when cut. */
export function clipped(text) {
  const head = cut(text, 320);
  return head === null ? text : `${head}...`;
}

/** A payload string described, never quoted: its length and at most a first character. */
export function described(text) {
  const chars = Array.from(text);
  if (chars.length === 0) return 'an empty string';
  let masked;
  if (text.includes('@')) masked = '…@…';
  else if (chars.length >= 4) masked = chars[0] + '…';
  else masked = '…';
  const plural = chars.length === 1 ? '' : 's';
  return `a string (${chars.length} character${plural}, ${debugString(masked)})`;
}

// ---------------------------------------------------------------------------------------------
// Values.

/** A typed field value, as `host.field` and the declared fields give it. */
export class Value {
  constructor(wit) {
    this.tag = wit.tag;
    this.val = wit.val;
  }

  /** `null`, `boolean`, `integer`, `float`, `string`, `byte string`, `array` or `object`. */
  get kind() {
    return {
      null: 'null',
      boolean: 'boolean',
      integer: 'integer',
      float: 'float',
      text: 'string',
      bytes: 'byte string',
      array: 'array',
      object: 'object',
    }[this.tag];
  }

  isNull() { return this.tag === 'null'; }
  asBool() { return this.tag === 'boolean' ? this.val : undefined; }
  asStr() { return this.tag === 'text' ? this.val : undefined; }
  /** An integer (a BigInt) for `integer`. */
  asI64() { return this.tag === 'integer' ? this.val : undefined; }
  /** A number for `integer` and `float`. */
  asF64() {
    if (this.tag === 'float') return this.val;
    if (this.tag === 'integer') return Number(this.val);
    return undefined;
  }

  /** Kind and size, never the content: what a reason or alert may say of a value. */
  describe() {
    const kind = this.kind;
    switch (this.tag) {
      case 'null':
        return kind;
      case 'boolean':
      case 'float':
        return `a ${kind}`;
      case 'integer': {
        const digits = (this.val < 0n ? -this.val : this.val).toString().length;
        return `an ${kind} (${digits} digit${digits === 1 ? '' : 's'})`;
      }
      case 'text':
        return described(this.val);
      case 'bytes':
        return `a ${kind} (${this.val.length} bytes)`;
      case 'array':
        return `an ${kind} (${this.val} elements)`;
      default:
        return `an ${kind} (${this.val} members)`;
    }
  }
}

/** Why a field could not be looked up: `unstructured`, `malformed` or `bad-pointer`. */
export class FieldError extends Error {
  constructor(wit) {
    super(wit.tag === 'unstructured' ? 'the payload has no fields' : `${wit.val}`);
    this.kind = wit.tag;
    this.detail = wit.val;
  }
}

// ---------------------------------------------------------------------------------------------
// JSON Pointers (RFC 6901).

/** The error of a pointer that is not a JSON Pointer, or null when it is one. */
export function pointerError(pointer) {
  if (pointer !== '' && !pointer.startsWith('/')) {
    return `${debugString(pointer)} does not start with '/'`;
  }
  for (let i = 0; i < pointer.length; i++) {
    if (pointer[i] === '~' && pointer[i + 1] !== '0' && pointer[i + 1] !== '1') {
      return `${debugString(pointer)} has a '~' not followed by '0' or '1'`;
    }
  }
  return null;
}

/** A member name as a pointer token: `~` as `~0`, `/` as `~1`. */
export function escapeToken(name) {
  return name.replaceAll('~', '~0').replaceAll('/', '~1');
}

// ---------------------------------------------------------------------------------------------
// Declarations, taken during init.

let manifest = null;

function declaring(what) {
  if (manifest === null) {
    throw new PolicyError(`${what} can only be declared during init`);
  }
  return manifest;
}

function addPointer(list, max, what, pointer) {
  const error = pointerError(pointer);
  if (error !== null) throw new PolicyError(`${what} ${error}`);
  const known = list.indexOf(pointer);
  if (known >= 0) return known;
  if (list.length >= max) {
    throw new PolicyError(`at most ${max} ${what}s can be declared; ${debugString(pointer)} is one more`);
  }
  list.push(pointer);
  return list.length - 1;
}

class Metric {
  constructor(index, kind) {
    this.index = index;
    this.kind = kind;
  }
  /** Counters: adds `n` (a non-negative integer). */
  add(n = 1) { host.counterAdd(this.index, BigInt(n)); }
  /** Histograms: records `x` (finite). */
  record(x) { host.histogramRecord(this.index, x); }
}

function metric(kind, name, unit, description) {
  const m = declaring('a metric');
  if (!/^[a-z][a-z0-9_.]{0,63}$/.test(name)) {
    throw new PolicyError(
      `metric name ${debugString(name)}: lower-case letters, digits, '_' and '.', starting with a letter, at most 64 characters`,
    );
  }
  if (m.metrics.some((x) => x.name === name)) {
    throw new PolicyError(`metric ${debugString(name)} is declared twice`);
  }
  if (m.metrics.length >= MAX_METRICS) {
    throw new PolicyError(`at most ${MAX_METRICS} metrics can be declared`);
  }
  m.metrics.push({ name, kind, unit, description });
  return new Metric(m.metrics.length - 1, kind);
}

/** What a policy reads on every message, declared in `init`. */
export const declare = {
  /** A field read on every message: handed over with it; returns its handle for `msg.get`. */
  field(pointer) {
    return addPointer(declaring('a field').fields, MAX_FIELDS, 'field', pointer);
  },
  fields(pointers) {
    return Array.from(pointers, (p) => declare.field(p));
  },
  /** Envelope parts copied into every call (`Envelope.DEVICE_ID | Envelope.TOPIC`). */
  envelope(parts) {
    declaring('an envelope part').envelope |= parts;
  },
  /** A field whose last forwarded value per device `msg.last(handle)` reads. */
  keepLast(pointer) {
    return addPointer(declaring('a keep-last field').keepLast, MAX_KEEP_LAST, 'keep-last field', pointer);
  },
  counter(name, unit = '', description = '') { return metric('counter', name, unit, description); },
  histogram(name, unit = '', description = '') { return metric('histogram', name, unit, description); },
};

// ---------------------------------------------------------------------------------------------
// Settings.

/** The policy's configured key-values, with checks that fail the load naming the key. */
export class Config {
  constructor(pairs) {
    this.pairs = pairs;
    this.map = new Map(pairs);
  }

  /** The value of `key`, or `fallback` when it is not set. */
  get(key, fallback = undefined) {
    return this.map.has(key) ? this.map.get(key) : fallback;
  }

  has(key) { return this.map.has(key); }

  /** Refuses a key the policy does not know (a typo would otherwise be ignored). */
  checkKeys(known) {
    for (const [key] of this.pairs) {
      if (!known.includes(key)) {
        throw new PolicyError(
          `unknown config key ${debugString(key)}; known keys: ${known.join(', ')}`,
        );
      }
    }
  }

  /** A non-negative integer (Rust's `usize` rules: digits, an optional `+`). */
  int(key, fallback) {
    const text = this.get(key);
    if (text === undefined) return fallback;
    if (!/^\+?[0-9]+$/.test(text)) {
      throw new PolicyError(`config \`${key}\`: invalid value ${debugString(text)}: invalid digit found in string`);
    }
    return Number(text);
  }

  /** `true` or `false`. */
  bool(key, fallback) {
    const text = this.get(key);
    if (text === undefined) return fallback;
    if (text !== 'true' && text !== 'false') {
      throw new PolicyError(
        `config \`${key}\`: invalid value ${debugString(text)}: provided string was not \`true\` or \`false\``,
      );
    }
    return text === 'true';
  }

  /** A number. */
  float(key, fallback) {
    const text = this.get(key);
    if (text === undefined) return fallback;
    const n = Number(text);
    if (text.trim() === '' || Number.isNaN(n)) {
      throw new PolicyError(`config \`${key}\`: invalid value ${debugString(text)}: invalid float literal`);
    }
    return n;
  }

  /** A JSON Pointer, not the empty one. */
  pointer(key, fallback) {
    const text = this.get(key);
    if (text === undefined) return fallback;
    checkPointer(key, text);
    return text;
  }

  /** Comma-separated JSON Pointers, checked, without duplicates. */
  pointers(key) {
    const text = this.get(key);
    if (text === undefined) return [];
    const out = [];
    for (const raw of text.split(',')) {
      const p = raw.trim();
      checkPointer(key, p);
      if (!out.includes(p)) out.push(p);
    }
    return out;
  }
}

function checkPointer(key, pointer) {
  if (pointer === '') {
    throw new PolicyError(
      `config \`${key}\`: the empty pointer names the whole document, which cannot be used here (a stray comma?)`,
    );
  }
  const error = pointerError(pointer);
  if (error !== null) throw new PolicyError(`config \`${key}\`: ${error}`);
}

// ---------------------------------------------------------------------------------------------
// The message.

const DECODER = new TextDecoder();

/** One device message, as the policy sees it. */
export class Message {
  constructor(wit, declared) {
    this.wit = wit;
    this.declared = declared;
    this.cache = {};
  }

  /** The device's identity (fetched on first use unless declared). */
  get deviceId() {
    return this.wit.deviceId ?? (this.cache.deviceId ??= host.deviceId());
  }

  /** The MQTT topic (fetched on first use unless declared). */
  get topic() {
    return this.wit.topic ?? (this.cache.topic ??= host.topic());
  }

  /** `json`, `cbor`, `text` or `binary`. */
  get contentType() { return this.wit.contentType; }

  /** Whether the payload has fields (JSON or CBOR). */
  get structured() { return this.wit.contentType === 'json' || this.wit.contentType === 'cbor'; }

  get payloadLen() { return this.wit.payloadLen; }

  /** Milliseconds since the Unix epoch: when the host received it. */
  get receivedAtMs() { return Number(this.wit.receivedAtMs); }

  /** The per-message seed (a BigInt). */
  get seed() { return this.wit.seed; }

  /** The payload bytes (a Uint8Array), as redacted by the policies before this one. */
  get payload() {
    return (this.cache.payload ??= host.payload());
  }

  /** The payload as text, or undefined when it is not UTF-8. */
  get payloadText() {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.payload);
    } catch {
      return undefined;
    }
  }

  /** Transport attributes, `[name, value]` pairs in arrival order. */
  get attributes() {
    return (this.cache.attributes ??= host.attributes());
  }

  attribute(name) {
    const pair = this.attributes.find(([k]) => k === name);
    return pair ? pair[1] : undefined;
  }

  /** The registry entry (`{ class, attributes }`), or undefined. */
  get device() {
    if (!('device' in this.cache)) this.cache.device = host.deviceEntry();
    return this.cache.device;
  }

  /** A declared field by its handle: a Value, or undefined when absent. Throws FieldError. */
  get(handle) {
    const fields = this.wit.fields;
    if (fields.tag === 'err') throw new FieldError(fields.val);
    const v = fields.val[handle];
    return v === undefined || v === null ? undefined : new Value(v);
  }

  /** A field by JSON Pointer: declared ones from the message, others looked up by the host. */
  field(pointer) {
    const i = this.declared.indexOf(pointer);
    if (i >= 0) return this.get(i);
    let v;
    try {
      v = host.field(pointer);
    } catch (e) {
      throw new FieldError(e.payload ?? { tag: 'malformed', val: String(e) });
    }
    return v === undefined || v === null ? undefined : new Value(v);
  }

  /** The last forwarded value of a keep-last handle, or undefined. */
  last(handle) {
    const v = this.wit.last[handle];
    return v === undefined || v === null ? undefined : new Value(v);
  }

  /** Typed lookups: undefined on absence, another kind or an error. */
  f64(pointer) { return this.quiet(pointer)?.asF64(); }
  i64(pointer) { return this.quiet(pointer)?.asI64(); }
  str(pointer) { return this.quiet(pointer)?.asStr(); }
  bool(pointer) { return this.quiet(pointer)?.asBool(); }
  has(pointer) { return this.quiet(pointer) !== undefined; }

  quiet(pointer) {
    try {
      return this.field(pointer);
    } catch {
      return undefined;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decisions.

/** What happens to a message: a verdict plus more alerts. */
export class Decision {
  constructor(verdict) {
    this.verdict = verdict;
    this.edits = [];
    this.alerts = [];
  }

  static allow() { return new Decision({ tag: 'allow' }); }
  /** Forward with the edits added by `remove` and `mask`. */
  static redact() { return new Decision({ tag: 'redact' }); }
  /** Hold the message back; `reason` is shown to the operator. Stops the chain. */
  static quarantine(reason) { return new Decision({ tag: 'quarantine', val: String(reason) }); }
  /** Forward and raise this security event. */
  static alert(severity, code, detail) {
    return new Decision({ tag: 'alert', val: { severity, code, detail: String(detail) } });
  }

  /** Removes the field at `pointer`. */
  remove(pointer) {
    this.edits.push({ pointer, action: { tag: 'remove' } });
    return this;
  }

  /** Replaces the value at `pointer` with `text`. */
  mask(pointer, text = '***') {
    this.edits.push({ pointer, action: { tag: 'mask', val: text } });
    return this;
  }

  /** Raises one more alert, whatever the verdict. */
  withAlert(severity, code, detail) {
    this.alerts.push({ severity, code, detail: String(detail) });
    return this;
  }

  /** The contract's decision. The Rust SDK's rules: edits on an alert make it
   * redact-and-alert, edits on a quarantine are dropped, a redaction without edits allows. */
  toWit() {
    const v = this.verdict;
    if (v.tag === 'redact' || (v.tag === 'allow' && this.edits.length > 0)) {
      if (this.edits.length === 0) return { verdict: { tag: 'allow' }, alerts: this.alerts };
      return { verdict: { tag: 'redact', val: this.edits }, alerts: this.alerts };
    }
    if (v.tag === 'alert' && this.edits.length > 0) {
      return { verdict: { tag: 'redact', val: this.edits }, alerts: [v.val, ...this.alerts] };
    }
    return { verdict: v, alerts: this.alerts };
  }
}

// ---------------------------------------------------------------------------------------------
// State.

const ENCODER = new TextEncoder();

/** Why a state write was refused: `over-limit`, `too-many-devices`, `no-message`, or
 * `contended` (`globalState.update` gave up). */
export class StateError extends Error {
  constructor(wit, scope) {
    const limit = wit.val;
    const text = {
      'over-limit': `the ${scope} state would exceed its limit of ${limit} bytes`,
      'too-many-devices': `state is kept for ${limit} devices already (the state-devices limit)`,
      'no-message': 'state is only reachable while a message is evaluated',
      contended: `another worker changed the value on each of ${limit} attempts`,
    }[wit.tag];
    super(text);
    this.kind = wit.tag;
    this.limit = limit;
  }
}

function write(scope, fn) {
  try {
    return fn();
  } catch (e) {
    if (e.payload) throw new StateError(e.payload, scope);
    throw e;
  }
}

/** Per-device state: scoped by the host to the message's device and to this policy. */
export const state = {
  get(key) { return host.stateGet(key); },
  set(key, bytes) { write('device', () => host.stateSet(key, bytes)); },
  delete(key) { host.stateDelete(key); },
  getJson(key, fallback = undefined) {
    const b = host.stateGet(key);
    if (b === undefined || b === null) return fallback;
    try {
      return JSON.parse(DECODER.decode(b));
    } catch {
      return fallback;
    }
  },
  setJson(key, value) { state.set(key, ENCODER.encode(JSON.stringify(value))); },
};

/** Policy-wide state: one namespace for every device and worker. */
export const globalState = {
  get(key) { return host.globalGet(key); },
  set(key, bytes) { write('policy-wide', () => host.globalSet(key, bytes)); },
  delete(key) { host.globalDelete(key); },
  /** Replaces the value only if it still holds `expected` (undefined: absent). */
  swap(key, expected, next) {
    return write('policy-wide', () => host.globalSwap(key, expected, next));
  },
  /** Computes the new value from the current one and swaps it in, retrying; returns it. */
  update(key, fn) {
    for (let i = 0; i < 100; i++) {
      const old = host.globalGet(key);
      const next = fn(old ?? undefined);
      if (globalState.swap(key, old ?? undefined, next)) return next;
    }
    throw new StateError({ tag: 'contended', val: 100 }, 'policy-wide');
  },
  getJson(key, fallback = undefined) {
    const b = host.globalGet(key);
    if (b === undefined || b === null) return fallback;
    try {
      return JSON.parse(DECODER.decode(b));
    } catch {
      return fallback;
    }
  },
  setJson(key, value) { globalState.set(key, ENCODER.encode(JSON.stringify(value))); },
};

/** The host log, attributed to the policy. */
export const log = {
  trace: (text) => host.log('trace', String(text)),
  debug: (text) => host.log('debug', String(text)),
  info: (text) => host.log('info', String(text)),
  warn: (text) => host.log('warn', String(text)),
  error: (text) => host.log('error', String(text)),
};

// ---------------------------------------------------------------------------------------------
// Walking a payload's members (strict schemas).

/** Calls `visit(pointer)` for every member of the root object of a JSON or CBOR payload, and
 * for the members of every member object `visit` returned true for; array elements are never
 * visited. Throws a string when the payload does not parse. */
export function walkMembers(contentType, payload, visit) {
  if (contentType === 'json') {
    let doc;
    try {
      doc = JSON.parse(DECODER.decode(payload));
    } catch (e) {
      throw `JSON: ${e.message}`;
    }
    const walk = (obj, prefix) => {
      if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return;
      for (const key of Object.keys(obj)) {
        const pointer = `${prefix}/${escapeToken(key)}`;
        if (visit(pointer)) walk(obj[key], pointer);
      }
    };
    walk(doc, '');
    return;
  }
  if (contentType === 'cbor') {
    new CborMembers(payload, visit).item('', true);
  }
}

/** Just enough CBOR (RFC 8949) to walk map members: every item is read, only maps are looked into. */
class CborMembers {
  constructor(bytes, visit) {
    this.b = bytes;
    this.i = 0;
    this.visit = visit;
  }

  byte() {
    if (this.i >= this.b.length) throw 'CBOR: unexpected end of input';
    return this.b[this.i++];
  }

  arg(info) {
    if (info < 24) return info;
    const n = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (n === undefined) throw `CBOR: unsupported additional information ${info}`;
    let v = 0;
    for (let k = 0; k < n; k++) v = v * 256 + this.byte();
    return v;
  }

  text() {
    const head = this.byte();
    if (head >> 5 !== 3) throw 'CBOR: a map key that is not text';
    const len = this.arg(head & 31);
    const end = this.i + len;
    if (end > this.b.length) throw 'CBOR: unexpected end of input';
    const s = DECODER.decode(this.b.subarray(this.i, end));
    this.i = end;
    return s;
  }

  // Reads one item; `look` when its members are to be visited (it is the root or a container).
  item(pointer, look) {
    const head = this.byte();
    const major = head >> 5;
    const info = head & 31;
    if (info === 31) throw 'CBOR: indefinite lengths are not supported';
    const n = this.arg(info);
    switch (major) {
      case 0:
      case 1:
      case 7:
        return;
      case 2:
      case 3:
        this.i += n;
        if (this.i > this.b.length) throw 'CBOR: unexpected end of input';
        return;
      case 4:
        for (let k = 0; k < n; k++) this.item(pointer, false);
        return;
      case 5:
        for (let k = 0; k < n; k++) {
          const member = `${pointer}/${escapeToken(this.text())}`;
          const inner = look ? this.visit(member) : false;
          this.item(member, inner);
        }
        return;
      default:
        this.item(pointer, look);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Export.

/** The `handler` export for a policy class: `export const handler = exportPolicy(MyPolicy);`. */
export function exportPolicy(PolicyClass) {
  let policy = null;
  let declared = [];
  return {
    init(pairs) {
      manifest = { fields: [], envelope: 0, keepLast: [], metrics: [] };
      policy = null;
      try {
        const p = new PolicyClass();
        p.init?.(new Config(pairs));
        policy = p;
        declared = manifest.fields;
        return {
          fields: manifest.fields,
          envelope: {
            deviceId: (manifest.envelope & Envelope.DEVICE_ID) !== 0,
            topic: (manifest.envelope & Envelope.TOPIC) !== 0,
          },
          keepLast: manifest.keepLast,
          metrics: manifest.metrics,
        };
      } catch (e) {
        // An err result: the load fails with this text.
        throw e instanceof Error ? e.message : String(e);
      } finally {
        manifest = null;
      }
    },
    evaluate(message) {
      if (policy === null) {
        return Decision.quarantine('evaluate called before a successful init').toWit();
      }
      return policy.evaluate(new Message(message, declared)).toWit();
    },
  };
}

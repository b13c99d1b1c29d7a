// schema-guard in JavaScript: the port of policies/schema-guard (Rust), rule for rule and text
// for text. It passes the Rust policy's test file:
//   twinguard test --policy schema_guard_js.wasm policies/schema-guard
// See policies/schema-guard/README.md for the rules and settings.

import {
  Decision, PolicyError, Severity, clipped, debugString, declare, exportPolicy, pointerError,
  quoted, walkMembers,
} from '../../guest-sdk-js/twinguard-policy.js';

const KNOWN_KEYS = ['content-types', 'max-bytes', 'min-bytes', 'required', 'optional', 'forbid', 'strict'];
const KINDS = ['string', 'integer', 'number', 'boolean', 'object', 'array', 'any'];
const CONTENT_TYPES = ['json', 'cbor', 'text', 'binary'];
/** How many undeclared fields a detail names; the rest are counted. */
const MAX_NAMED = 5;

function matches(kind, value) {
  switch (kind) {
    case 'string': return value.tag === 'text';
    case 'integer': return value.tag === 'integer';
    // A finite float only: CBOR can carry NaN and the infinities, which JSON cannot.
    case 'number': return value.tag === 'integer' || (value.tag === 'float' && Number.isFinite(value.val));
    case 'boolean': return value.tag === 'boolean';
    case 'object': return value.tag === 'object';
    case 'array': return value.tag === 'array';
    default: return true;
  }
}

/** What a field holds, for a reason: as the Rust policy's `described`. */
function described(value) {
  if (value.tag === 'float' && !Number.isFinite(value.val)) {
    const which = Number.isNaN(value.val) ? 'NaN' : value.val > 0 ? 'inf' : '-inf';
    return `a float that is not finite (${which})`;
  }
  return value.describe();
}

class Rejection {
  constructor(code, reason) {
    this.code = code;
    this.reason = reason;
  }
}

function contentTypes(list) {
  const out = [];
  for (const raw of list.split(',')) {
    const name = raw.trim();
    if (!CONTENT_TYPES.includes(name)) {
      throw new PolicyError(
        `config \`content-types\`: invalid value ${debugString(name)} in ${debugString(list)}: expected json, cbor, text or binary`,
      );
    }
    if (!out.includes(name)) out.push(name);
  }
  return out;
}

/** The `pointer:kind` entries of `key`. */
function kinded(key, list) {
  const fields = [];
  for (const raw of list.split(',')) {
    const entry = raw.trim();
    const colon = entry.lastIndexOf(':');
    if (colon < 0) {
      throw new PolicyError(
        `config \`${key}\`: entry ${debugString(entry)} has no kind: write pointer:kind, e.g. "/seq:integer"`,
      );
    }
    const kind = entry.slice(colon + 1).trim();
    if (!KINDS.includes(kind)) {
      throw new PolicyError(
        `config \`${key}\`: entry ${debugString(entry)} has unknown kind ${debugString(kind)}: expected string, integer, number, boolean, object, array or any`,
      );
    }
    const pointer = entry.slice(0, colon).trim();
    if (pointer === '') {
      throw new PolicyError(`config \`${key}\`: the empty pointer names the whole document, which cannot be used here (a stray comma?)`);
    }
    const error = pointerError(pointer);
    if (error !== null) throw new PolicyError(`config \`${key}\`: ${error}`);
    const known = fields.find(([p]) => p === pointer);
    if (known && known[1] !== kind) {
      throw new PolicyError(`config \`${key}\`: ${debugString(pointer)} is listed both as ${known[1]} and as ${kind}`);
    }
    if (!known) fields.push([pointer, kind]);
  }
  return fields;
}

/** Which members `required` and `optional` declare (see the Rust policy's `Coverage`). */
class Coverage {
  constructor(pointers) {
    this.declared = new Set();
    this.containers = new Set();
    for (const p of pointers) {
      for (let i = p.indexOf('/', 1); i > 0; i = p.indexOf('/', i + 1)) {
        this.containers.add(p.slice(0, i));
      }
      this.declared.add(p);
    }
  }

  undeclared(contentType, payload) {
    const found = { count: 0, first: [] };
    walkMembers(contentType, payload, (pointer) => {
      if (this.containers.has(pointer)) return true;
      if (this.declared.has(pointer)) return false;
      found.count += 1;
      if (found.first.length < MAX_NAMED) found.first.push(pointer);
      return false;
    });
    return found;
  }
}

function undeclaredDetail(found, device) {
  let detail = `schema-guard: ${found.count} undeclared field${found.count === 1 ? '' : 's'} in device ${device}'s payload: ${found.first.map(quoted).join(', ')}`;
  if (found.count > found.first.length) detail += ` and ${found.count - found.first.length} more`;
  return detail;
}

class SchemaGuard {
  init(config) {
    config.checkKeys(KNOWN_KEYS);
    this.contentTypes = config.has('content-types') ? contentTypes(config.get('content-types')) : ['json', 'cbor'];
    this.maxBytes = config.int('max-bytes', 65536);
    this.minBytes = config.int('min-bytes', 1);
    if (this.minBytes > this.maxBytes) {
      throw new PolicyError(
        `config \`min-bytes\` (${this.minBytes}) is above \`max-bytes\` (${this.maxBytes}): every message would be refused`,
      );
    }
    this.required = config.has('required') ? kinded('required', config.get('required')) : [];
    this.optional = config.has('optional') ? kinded('optional', config.get('optional')) : [];
    this.forbid = config.pointers('forbid');
    const inBoth = (list, other) => list.find(([p]) => other.includes(p));
    let both = inBoth(this.required, this.forbid);
    if (both) throw new PolicyError(`config: pointer ${debugString(both[0])} is in both \`required\` and \`forbid\`; no message could pass`);
    both = inBoth(this.optional, this.forbid);
    if (both) throw new PolicyError(`config: pointer ${debugString(both[0])} is in both \`optional\` and \`forbid\`; keep it in one`);
    both = inBoth(this.optional, this.required.map(([p]) => p));
    if (both) throw new PolicyError(`config: pointer ${debugString(both[0])} is in both \`required\` and \`optional\`; keep it in one`);
    const strict = config.get('strict', 'off');
    if (!['off', 'alert', 'quarantine'].includes(strict)) {
      throw new PolicyError(`config \`strict\`: invalid value ${debugString(strict)}: expected \`off\`, \`alert\` or \`quarantine\``);
    }
    this.strict = strict;
    if (strict !== 'off' && this.required.length === 0 && this.optional.length === 0) {
      throw new PolicyError(
        `config \`strict\` = ${debugString(strict)} needs the declared fields in \`required\` and/or \`optional\`: without them every field would be undeclared`,
      );
    }
    this.coverage = new Coverage([...this.required, ...this.optional].map(([p]) => p));
    // Read on every message; the device id only words rejections (fetched then).
    declare.field('');
    declare.fields(this.required.map(([p]) => p));
    declare.fields(this.optional.map(([p]) => p));
    declare.fields(this.forbid);
  }

  evaluate(msg) {
    const rejection = this.check(msg);
    if (rejection) {
      return Decision.quarantine(rejection.reason).withAlert(Severity.MEDIUM, rejection.code, rejection.reason);
    }
    if (this.strict === 'off' || !msg.structured) return Decision.allow();
    const device = quoted(msg.deviceId);
    let found;
    try {
      found = this.coverage.undeclared(msg.contentType, msg.payload);
    } catch (why) {
      const reason = `schema-guard: strict: cannot read the members of the ${msg.contentType} payload from device ${device}: ${clipped(String(why))}`;
      return Decision.quarantine(reason).withAlert(Severity.MEDIUM, 'malformed', reason);
    }
    if (found.count === 0) return Decision.allow();
    const detail = undeclaredDetail(found, device);
    return this.strict === 'quarantine'
      ? Decision.quarantine(detail).withAlert(Severity.MEDIUM, 'undeclared-field', detail)
      : Decision.alert(Severity.MEDIUM, 'undeclared-field', detail);
  }

  /** The first rule the message breaks, in the documented order, or undefined. */
  check(msg) {
    const device = () => quoted(msg.deviceId);
    const len = msg.payloadLen;
    if (len > this.maxBytes) {
      return new Rejection('oversized', `schema-guard: payload of ${len} bytes from device ${device()} is over max-bytes ${this.maxBytes}`);
    }
    if (len < this.minBytes) {
      return new Rejection('undersized', `schema-guard: payload of ${len} bytes from device ${device()} is under min-bytes ${this.minBytes}`);
    }
    const ct = msg.contentType;
    if (!this.contentTypes.includes(ct)) {
      return new Rejection('content-type', `schema-guard: content type ${ct} from device ${device()} is not in content-types ${this.contentTypes.join(',')}`);
    }
    if (!msg.structured) return undefined;
    const lookup = (pointer) => {
      try {
        return { value: msg.field(pointer) };
      } catch (e) {
        const reason = e.kind === 'malformed'
          ? `schema-guard: the ${ct} payload from device ${device()} is malformed: ${clipped(String(e.detail))}`
          : `schema-guard: lookup of ${debugString(pointer)} failed for device ${device()}: ${e.message}`;
        return { rejection: new Rejection('malformed', reason) };
      }
    };
    const root = lookup('');
    if (root.rejection) return root.rejection;
    if (root.value === undefined) {
      return new Rejection('malformed', `schema-guard: the ${ct} payload from device ${device()} is empty`);
    }
    if (root.value.tag !== 'object') {
      return new Rejection('schema', `schema-guard: the ${ct} payload from device ${device()} is ${root.value.describe()}, expected an object at the root`);
    }
    for (const [pointer, kind] of this.required) {
      const r = lookup(pointer);
      if (r.rejection) return r.rejection;
      if (r.value === undefined) {
        return new Rejection('schema', `schema-guard: required field ${pointer} (${kind}) is missing from device ${device()}'s payload`);
      }
      if (!matches(kind, r.value)) {
        return new Rejection('schema', `schema-guard: field ${pointer} from device ${device()} is ${described(r.value)}, expected ${kind}`);
      }
    }
    for (const [pointer, kind] of this.optional) {
      const r = lookup(pointer);
      if (r.rejection) return r.rejection;
      if (r.value !== undefined && !matches(kind, r.value)) {
        return new Rejection('schema', `schema-guard: optional field ${pointer} from device ${device()} is ${described(r.value)}, expected ${kind}`);
      }
    }
    for (const pointer of this.forbid) {
      const r = lookup(pointer);
      if (r.rejection) return r.rejection;
      if (r.value !== undefined) {
        return new Rejection('schema', `schema-guard: forbidden field ${pointer} is present in device ${device()}'s payload (${described(r.value)})`);
      }
    }
    return undefined;
  }
}

export const handler = exportPolicy(SchemaGuard);

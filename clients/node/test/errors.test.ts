/** Decoding a google.rpc.Status trailer with the vendored google.rpc protos (no network). */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { decodeRichStatus } from '../src';
import { loadErrorRoot, VENDORED_PROTOS_DIR } from '../src/protos';

test('the google.rpc protos are vendored under vendor/protos', () => {
  assert.equal(path.basename(path.dirname(VENDORED_PROTOS_DIR)), 'vendor');
  for (const file of ['status.proto', 'error_details.proto']) {
    assert.ok(fs.existsSync(path.join(VENDORED_PROTOS_DIR, 'google', 'rpc', file)), file);
  }
});

test('decodeRichStatus: ErrorInfo and BadRequest from a Status built with the vendored types', () => {
  const root = loadErrorRoot();
  const pack = (typeName: string, value: object) => {
    const type = root.lookupType(typeName);
    return { type_url: `type.googleapis.com/${typeName}`, value: type.encode(type.fromObject(value)).finish() };
  };
  const status = root.lookupType('google.rpc.Status');
  const bytes = status
    .encode(
      status.fromObject({
        code: 3,
        message: 'OUT_OF_RANGE: target must be in [-1, 1]',
        details: [
          pack('google.rpc.ErrorInfo', { reason: 'OUT_OF_RANGE', domain: 'nautilus-mesh' }),
          pack('google.rpc.BadRequest', { fieldViolations: [{ field: 'target', description: 'out of range' }] }),
          pack('google.rpc.DebugInfo', { detail: 'not decoded by the client' }),
        ],
      }),
    )
    .finish();
  const rich = decodeRichStatus(bytes);
  assert.equal(rich.errorInfo?.reason, 'OUT_OF_RANGE');
  assert.deepEqual(rich.fieldViolations, [{ field: 'target', description: 'out of range' }]);
  assert.deepEqual(rich.otherDetails, ['google.rpc.DebugInfo']);
});

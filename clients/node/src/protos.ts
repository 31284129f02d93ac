/**
 * Loads the mesh's contract at run time with @grpc/proto-loader, from the repository's `protos/`
 * (the one source of truth) plus the two google.rpc files vendored in `clients/node/vendor/protos/`.
 *
 * The TypeScript types in `src/gen/` are generated from the same files by `npm run build`
 * (proto-loader-gen-types), with the same loader options, so the types cannot drift from what is loaded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as protobuf from 'protobufjs';

import type { ProtoGrpcType as AdminProto } from './gen/admin';
import type { ProtoGrpcType as EngineProto } from './gen/engine';
import type { ProtoGrpcType as OpsProto } from './gen/ops';

/** Options shared by the loader and the type generator (package.json `gen-types`). */
export const LOADER_OPTIONS = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
} as const;

const CONTRACT_FILES = [
  'nautilus/ops/v1/ops.proto',
  'nautilus/ops/v1/admin.proto',
  'nautilus/engine/v1/engine.proto',
];

const ERROR_FILES = ['google/rpc/status.proto', 'google/rpc/error_details.proto', 'nautilus/common/v1/common.proto'];

/** The package's own folder (this file is compiled to `dist/src/`). */
const PACKAGE_DIR = path.resolve(__dirname, '..', '..');

/** The vendored google.rpc protos (status.proto, error_details.proto), kept apart from our own code. */
export const VENDORED_PROTOS_DIR = path.join(PACKAGE_DIR, 'vendor', 'protos');

/** Where the contract lives: `$NAUTILUS_PROTOS`, else the repository's `protos/` two folders up. */
export function defaultProtoDir(): string {
  return process.env.NAUTILUS_PROTOS ?? path.resolve(PACKAGE_DIR, '..', '..', 'protos');
}

export type MeshProto = OpsProto & AdminProto & EngineProto;

const loaded = new Map<string, MeshProto>();
const errorRoots = new Map<string, protobuf.Root>();

/** The gRPC service constructors of the contract in `protoDir` (loaded once per folder). */
export function loadMeshProto(protoDir: string = defaultProtoDir()): MeshProto {
  let proto = loaded.get(protoDir);
  if (proto === undefined) {
    if (!fs.existsSync(path.join(protoDir, CONTRACT_FILES[0]))) {
      throw new Error(`no nautilus-mesh contract under ${protoDir} (set NAUTILUS_PROTOS to the repo's protos/)`);
    }
    const definition = protoLoader.loadSync(CONTRACT_FILES, {
      ...LOADER_OPTIONS,
      includeDirs: [protoDir, VENDORED_PROTOS_DIR],
    });
    proto = grpc.loadPackageDefinition(definition) as unknown as MeshProto;
    loaded.set(protoDir, proto);
  }
  return proto;
}

/** A protobufjs root holding google.rpc.Status, the google.rpc error details and our ErrorDetail. */
export function loadErrorRoot(protoDir: string = defaultProtoDir()): protobuf.Root {
  let root = errorRoots.get(protoDir);
  if (root === undefined) {
    root = new protobuf.Root();
    root.resolvePath = (_origin: string, target: string): string => {
      for (const dir of [VENDORED_PROTOS_DIR, protoDir]) {
        const candidate = path.join(dir, target);
        if (fs.existsSync(candidate)) return candidate;
      }
      return target; // google/protobuf/*.proto: bundled with protobufjs
    };
    root.loadSync(ERROR_FILES, { keepCase: LOADER_OPTIONS.keepCase });
    root.resolveAll();
    errorRoots.set(protoDir, root);
  }
  return root;
}

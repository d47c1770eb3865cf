// Validates the custom-resource objects of rendered manifests (cert-manager's Issuer and
// Certificate, Prometheus Operator's ServiceMonitor), which kubernetes-validate has no schema
// for, against their CRDs' schemas as the @kubernetes-models packages carry them: the JSON
// schema (types, required fields, enums, patterns) at run time, and the TypeScript declarations
// for unknown fields (excess-property checks of typed literals, `tsc --noEmit`), since the CRD
// schemas themselves allow any field. Any other kind of those API groups is an error.
// Usage: node check.mjs RENDERED.yaml...
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { execFileSync } from "node:child_process";
import { parseAllDocuments } from "yaml";
import * as certManager from "@kubernetes-models/cert-manager/cert-manager.io/v1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const here = dirname(fileURLToPath(import.meta.url));
const groups = {
  "cert-manager.io/v1": { models: certManager, module: "@kubernetes-models/cert-manager/cert-manager.io/v1" },
  "monitoring.coreos.com/v1": { models: monitoring, module: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1" },
};

let failures = 0;
const typed = [];
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const obj = doc.toJS();
    if (!obj || !groups[obj.apiVersion]) continue;
    const where = `${file}: ${obj.kind} ${obj.metadata?.name}`;
    const { models, module } = groups[obj.apiVersion];
    const Model = models[obj.kind];
    if (!Model) {
      console.error(`${where}: no schema for kind ${obj.kind} in ${obj.apiVersion}`);
      failures++;
      continue;
    }
    try {
      new Model(obj).validate();
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      failures++;
      continue;
    }
    typed.push({ where, module, kind: obj.kind, obj });
  }
}

if (typed.length > 0) {
  // Inside this package, so that the imports resolve to its node_modules.
  const dir = mkdtempSync(join(here, ".typed-"));
  const imports = [...new Set(typed.map((t) => `import type * as m${Object.keys(groups).findIndex((g) => groups[g].module === t.module)} from "${t.module}";`))];
  const body = typed.map((t, i) => {
    const alias = `m${Object.keys(groups).findIndex((g) => groups[g].module === t.module)}`;
    return `// ${t.where}\nexport const o${i}: ${alias}.I${t.kind} = ${JSON.stringify(t.obj, null, 2)};`;
  });
  const source = join(dir, "objects.ts");
  writeFileSync(source, [...imports, ...body].join("\n") + "\n");
  const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
  try {
    const config = join(dir, "tsconfig.json");
    writeFileSync(config, JSON.stringify({
      compilerOptions: { noEmit: true, strict: true, module: "nodenext", moduleResolution: "nodenext", skipLibCheck: true, types: [] },
      files: ["objects.ts"],
    }));
    execFileSync(process.execPath, [tsc, "--project", config], { stdio: "pipe", cwd: here });
  } catch (e) {
    console.error(`unknown or mistyped fields:\n${e.stdout}${e.stderr}`);
    failures++;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (failures > 0) {
  console.error(`${failures} custom-resource object(s) do not match their CRD schemas`);
  process.exit(1);
}
console.log(`${typed.length} custom-resource objects match their CRD schemas (cert-manager, Prometheus Operator)`);

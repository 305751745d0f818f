/**
 * A throw-away certificate authority and a broker certificate it signed, made with the JDK's keytool at test time.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  /** The CA certificate (PEM file) that clients trust. */
  readonly caFile: string;
  /** PKCS12 keystore with the broker key and its chain. */
  readonly keystore: string;
  readonly password: string;
  readonly dispose: () => void;
}

export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "test-pki-"));
  const password = "test-store-pass";
  const keytool = (...args: string[]) => execFileSync("keytool", args, { cwd: dir, stdio: "pipe" });
  const store = (file: string) => ["-keystore", file, "-storetype", "PKCS12", "-storepass", password];
  keytool(
    "-genkeypair",
    "-alias",
    "ca",
    "-keyalg",
    "RSA",
    "-keysize",
    "2048",
    "-dname",
    "CN=user-login-test-ca",
    "-ext",
    "bc:c",
    "-validity",
    "2",
    ...store("ca.p12"),
    "-keypass",
    password,
  );
  keytool("-exportcert", "-rfc", "-alias", "ca", ...store("ca.p12"), "-file", "ca.pem");
  keytool(
    "-genkeypair",
    "-alias",
    "broker",
    "-keyalg",
    "RSA",
    "-keysize",
    "2048",
    "-dname",
    "CN=localhost",
    "-validity",
    "2",
    ...store("broker.p12"),
    "-keypass",
    password,
  );
  keytool("-certreq", "-alias", "broker", ...store("broker.p12"), "-file", "broker.csr");
  keytool(
    "-gencert",
    "-alias",
    "ca",
    ...store("ca.p12"),
    "-infile",
    "broker.csr",
    "-outfile",
    "broker.pem",
    "-rfc",
    "-ext",
    "san=ip:127.0.0.1,dns:localhost",
    "-validity",
    "2",
  );
  keytool("-importcert", "-alias", "ca", ...store("broker.p12"), "-file", "ca.pem", "-noprompt");
  keytool("-importcert", "-alias", "broker", ...store("broker.p12"), "-file", "broker.pem");
  return {
    caFile: join(dir, "ca.pem"),
    keystore: join(dir, "broker.p12"),
    password,
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

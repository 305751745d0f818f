/** The masker the console and `dlq peek` share: personal fields at any depth and of any type, and patterns. */
import { describe, expect, it } from "vitest";
import { maskKey, maskPersonalData } from "../../functions/local/dlq.ts";

const UUID = "6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a5b";

describe("maskPersonalData", () => {
  it("masks a personal field whatever its value's type", () => {
    const out = maskPersonalData(JSON.stringify({ user_id: 12345678, ip: true, device_id: "abcdefgh1234", n: 5 }));
    expect(JSON.parse(out)).toEqual({ user_id: "****5678", ip: "****", device_id: "********1234", n: 5 });
  });

  it("masks nested objects and arrays, and every value under a personal field", () => {
    const out = maskPersonalData(
      JSON.stringify([
        { user: { user_id: "secret-user-0001" } },
        { device_id: ["dev-aaaa-0002", { x: "dev-bbbb-0003" }] },
      ]),
    );
    for (const secret of ["secret-user", "dev-aaaa", "dev-bbbb"]) expect(out).not.toContain(secret);
    expect(JSON.parse(out)).toEqual([
      { user: { user_id: "********0001" } },
      { device_id: ["********0002", { x: "********0003" }] },
    ]);
  });

  it("masks case and spelling variants of the personal fields", () => {
    const out = JSON.parse(
      maskPersonalData(
        JSON.stringify({ User_Id: "aaaabbbb1111", userId: "ccccdddd2222", DEVICEID: "eeee3333", IP: "x" }),
      ),
    );
    expect(out).toEqual({ User_Id: "********1111", userId: "********2222", DEVICEID: "****3333", IP: "****" });
  });

  it("masks IPv4, IPv6 and UUIDs anywhere, and leaves times and ordinary words alone", () => {
    const text = `from 10.1.2.3 and 2001:db8::8a2e:370:7334 and fe80::1 user ${UUID} at 12:30:45 in std::string`;
    const out = maskPersonalData(text);
    for (const secret of ["10.1.2.3", "2001:db8::8a2e", "fe80::1", UUID]) expect(out).not.toContain(secret);
    expect(out).toContain("at 12:30:45 in std::string");
  });

  it("masks key/value pairs in text that is not JSON (a cut value, a log line)", () => {
    const cut = '{"user_id": "jane-doe-7781", "userId":42424242, user-id=bob.smith-99, "ip": "host.example"';
    const out = maskPersonalData(cut);
    for (const secret of ["jane-doe", "4242424", "bob.smith", "host.ex"]) expect(out).not.toContain(secret);
    expect(out).toContain('"user_id": "********7781"');
    expect(out).toContain('"userId":****4242');
    expect(out).toContain("user-id=********h-99");
  });

  it("masks record keys whole, keeping their last four characters", () => {
    expect(maskKey(UUID)).toBe(`********${UUID.slice(-4)}`);
    expect(maskKey("12345678")).toBe("****5678");
    expect(maskKey("ab")).toBe("****");
    expect(maskKey("")).toBe("");
  });
});

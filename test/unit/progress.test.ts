import { describe, expect, it } from "vitest";
import { type HarnessStats, newHarnessStats } from "../../functions/local/harness.ts";
import { percentile, progressLine } from "../../functions/local/progress.ts";

describe("the harness's live progress line", () => {
  it("shows throughput, DLQ share by code, lag per partition and end-to-end age p50/p99", () => {
    const stats: HarnessStats = {
      ...newHarnessStats(),
      invocations: 3,
      failedInvocations: 0,
      recordsDelivered: 200,
      recordsCommitted: 200,
      processed: 190,
      deadLettered: 10,
      deadLetteredByCode: { SCHEMA_VIOLATION: 8, INVALID_JSON: 2 },
      lag: 7,
      lagByPartition: { "user-login-0": 3, "user-login-1": 4 },
      recentAgesMs: Array.from({ length: 100 }, (_, i) => i + 1),
    };
    expect(progressLine(stats, 123.4, 210)).toBe(
      "generated 210 | in 200 | processed 190 | dead-lettered 10 (5.0% SCHEMA_VIOLATION=8 INVALID_JSON=2) | lag 7 [0:3 1:4] | age p50 51 ms p99 100 ms | 123 rec/s",
    );
    expect(progressLine({ ...stats, parked: 4, discarded: 1 }, 0)).toMatch(/ \| parked 4 \| discarded 1$/);
  });

  it("computes nearest-rank percentiles", () => {
    expect(percentile([], 50)).toBeUndefined();
    expect(percentile([5, 1, 3], 50)).toBe(3);
    expect(percentile([5, 1, 3], 99)).toBe(5);
  });
});

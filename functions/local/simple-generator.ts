/**
 * A simple source of real-shaped user-login events, as the original generator emits them:
 * fresh UUIDs, app_version 2.3.0, android or iOS (absent in about 5%), four random octets, a US state, now.
 */
import { randomUUID } from "node:crypto";
import type { Producer } from "kafkajs";

// biome-ignore format: a table of codes reads better in rows
export const US_STATES = [
  "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "KY",
  "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND",
  "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
] as const;

export interface LoginMessage {
  readonly key: string;
  readonly value: string;
}

export function makeLoginMessage(random: () => number = Math.random, now: number = Date.now()): LoginMessage {
  const octet = () => Math.floor(random() * 256);
  const event: Record<string, unknown> = {
    user_id: randomUUID(),
    app_version: "2.3.0",
    ip: `${octet()}.${octet()}.${octet()}.${octet()}`,
    locale: US_STATES[Math.floor(random() * US_STATES.length)],
    device_id: randomUUID(),
    timestamp: Math.floor(now / 1000),
  };
  if (random() >= 0.05) event.device_type = random() < 0.5 ? "android" : "iOS";
  return { key: randomUUID(), value: JSON.stringify(event) };
}

export interface SimpleGeneratorOptions {
  readonly producer: Producer;
  readonly topic: string;
  /** Events per second. */
  readonly rate: number;
  readonly signal: AbortSignal;
  readonly onSent?: (count: number) => void;
}

/** Sends about `rate` events per second, once every 100 ms, until the signal aborts. Returns how many it sent. */
export async function runSimpleGenerator(options: SimpleGeneratorOptions): Promise<number> {
  const started = Date.now();
  let sent = 0;
  while (!options.signal.aborted) {
    const due = Math.floor(((Date.now() - started) / 1000) * options.rate);
    const messages: LoginMessage[] = [];
    while (sent + messages.length < due) messages.push(makeLoginMessage());
    if (messages.length > 0) {
      await options.producer.send({ topic: options.topic, acks: -1, messages });
      sent += messages.length;
      options.onSent?.(messages.length);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return sent;
}

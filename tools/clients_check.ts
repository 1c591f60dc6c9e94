// `make clients` (tools/clients.py) compiles this with the three TypeScript clients under --strict: what a
// GET gives must be a PUT body in every generator's types, and a nullable enum must take null.
import type { components } from "./openapi-typescript";
import type * as Hey from "./hey-api/types.gen";
import type * as Fetch from "./fetch";

type S = components["schemas"];

export const openapiTypescript = {
  onboard: (got: S["Onboard"]): S["OnboardUpdate"] => got,
  flow: (got: S["Flow"]): S["FlowWrite"] => got,
  entity: (got: S["Entity"]): S["EntityWrite"] => got,
  account: (got: S["Account"]): S["AccountWrite"] => got,
  userSettings: (got: S["UserSettings"]): S["UserSettingsWrite"] => got,
  unconnected: (got: S["Entity"]): S["Entity"] => ({ ...got, connected: null, source: null, recipient: null }),
};

export const heyApi = {
  onboard: (got: Hey.Onboard): Hey.OnboardUpdate => got,
  flow: (got: Hey.Flow): Hey.FlowWrite => got,
  entity: (got: Hey.Entity): Hey.EntityWrite => got,
  account: (got: Hey.Account): Hey.AccountWrite => got,
  userSettings: (got: Hey.UserSettings): Hey.UserSettingsWrite => got,
  unconnected: (got: Hey.Entity): Hey.Entity => ({ ...got, connected: null, source: null, recipient: null }),
};

export const typescriptFetch = {
  onboard: (got: Fetch.Onboard): Fetch.OnboardUpdate => got,
  flow: (got: Fetch.Flow): Fetch.FlowWrite => got,
  entity: (got: Fetch.Entity): Fetch.EntityWrite => got,
  account: (got: Fetch.Account): Fetch.AccountWrite => got,
  userSettings: (got: Fetch.UserSettings): Fetch.UserSettingsWrite => got,
  unconnected: (got: Fetch.Entity): Fetch.Entity => ({ ...got, connected: null, source: null, recipient: null }),
  byInvitation: (invitationId: string): Fetch.BuyerSetupRequest => ({ invitationId }),
};

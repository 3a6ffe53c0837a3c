import type * as fdpass from 'fdpass';
export declare function roundTrip(lib: typeof fdpass, name: string, script: string,
  receive?: (conn: fdpass.UnixSocket) => Promise<fdpass.Message>): Promise<void>;

// fdpass's ES module entry (package.json "exports" → "import"): the
// CommonJS build's exports, by name. It loads that build with require(),
// so `import` and `require()` share one instance of the library and its
// addon, and no name depends on Node's guess at a CommonJS module's exports.
// The names are those of index.ts; a test checks that the lists agree.
import { createRequire } from 'node:module';

const fdpass = createRequire(import.meta.url)('./index.js');

export default fdpass;
export const {
  UnixSocket, UnixServer, Message, Fd, fdNumber, kindOf,
  FrameDecoder, encodeFrame, HEADER_SIZE, MAX_FDS,
  FdpassError, SocketClosedError, ControlTruncatedError, MessageTruncatedError, ProtocolError,
  UnexpectedFdsError, FdFloodError,
  PeerRefusedError, TimeoutError, RemoteError, ChannelMessageError, ChannelDecodeError, NoHandlerError, errnoError,
  SocketFileReplacedError, UnsupportedRuntimeError, AddonLoadError, ServeConfigError, WorkerStartError, UntrustedDirectoryError,
  TakeoverError, UpgradeError,
  Channel, withFds, ReplyWithFds, CHANNEL_FD_ENV, encodeChannel, decodeChannel,
  Primary, STRATEGIES, Worker, connectionInfo, parseListen,
} = fdpass;

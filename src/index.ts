/**
 * fdpass: pass open file descriptors between processes over Unix domain
 * sockets (sendmsg(2)/recvmsg(2) with SCM_RIGHTS and SCM_CREDENTIALS, unix(7)).
 */
export { UnixSocket } from './socket/socket';
export type { SocketOptions, OutgoingMessage, ReceiveOptions, ConnectOptions, DatagramOptions, SocketType } from './socket/socket';
export { UnixServer } from './socket/server';
export type { ServerOptions, AllowList, AcceptOptions } from './socket/server';
export { Message } from './socket/message';
export { Fd, fdNumber, kindOf } from './socket/fd';
export type { FdLike, FdKind } from './socket/fd';
export type { Credentials } from './socket/frame';
export { FrameDecoder, encodeFrame, HEADER_SIZE, MAX_FDS } from './socket/frame';
export {
  FdpassError, SocketClosedError, ControlTruncatedError, MessageTruncatedError, ProtocolError,
  UnexpectedFdsError, FdFloodError,
  PeerRefusedError, TimeoutError, RemoteError, ChannelMessageError, ChannelDecodeError, NoHandlerError, errnoError,
  TakeoverError, UpgradeError,
} from './errors';
export type { ErrnoError, ProtocolReason, ChannelDecodeProblem, TakeoverReason } from './errors';
export { Channel, withFds, ReplyWithFds, CHANNEL_FD_ENV } from './channel/channel';
export type { ChannelMessage, RequestOptions, Handler, HandlerOptions, ChannelOptions } from './channel/channel';
export { encodeChannel, decodeChannel } from './channel/codec';
export { Primary, STRATEGIES } from './serve/primary';
export type { PrimaryOptions, Strategy, Status, WorkerStatus, LogEvent, TakeoverOptions, TakeoverInfo } from './serve/primary';
export { Worker, connectionInfo } from './serve/worker';
export type { ConnectionInfo, WorkerConfig } from './serve/worker';
export { parseListen } from './serve/listeners';
export type { ListenerSpec, ListenerInfo } from './serve/listeners';

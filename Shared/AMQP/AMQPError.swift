/// Everything that can go wrong talking to the broker, with what the broker or library said.
public enum AMQPError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The connection URL could not be understood.
    case invalidURL(String, reason: String)
    /// The broker closed the connection (`connection.close`), for example 320
    /// CONNECTION_FORCED after `rabbitmqctl close_all_connections`, or 403 ACCESS_REFUSED at login.
    case connectionClosed(replyCode: Int, replyText: String)
    /// The broker closed a channel (`channel.close`): 404 NOT_FOUND for a missing exchange or
    /// queue, 406 PRECONDITION_FAILED for a re-declaration with other arguments, 403 ACCESS_REFUSED…
    case channelClosed(replyCode: Int, replyText: String)
    /// librabbitmq reported a failure (socket error, timeout, bad frame…): its status and text.
    case library(status: Int32, message: String, during: String)
    /// The client is between connections (the broker went away and it is reconnecting) or closed.
    case notConnected
    /// The connection was closed by `close()`.
    case closed
    /// A `mandatory` message matched no queue; the broker returned it (`basic.return`).
    case unroutable(replyCode: Int, replyText: String)
    /// The broker refused responsibility for a message (`basic.nack`); publish it again.
    case nacked
    /// The connection or channel went away while a publish waited for its confirm: the broker may
    /// or may not have the message. At-least-once delivery means publishing it again.
    case confirmLost(reason: String)
    /// An ack, nack or reject for a delivery of a channel that has since closed. The broker has
    /// already put the message back in its queue and will deliver it again.
    case staleDelivery

    /// Shown to people; never contains a password.
    public var description: String {
        switch self {
        case .invalidURL(_, let reason): "invalid AMQP URL: \(reason)"
        case .connectionClosed(let code, let text): "broker closed the connection: \(code) \(text)"
        case .channelClosed(let code, let text): "broker closed the channel: \(code) \(text)"
        case .library(let status, let message, let during): "\(during) failed: \(message) (librabbitmq status \(status))"
        case .notConnected: "not connected to the broker (reconnecting)"
        case .closed: "the connection was closed"
        case .unroutable(let code, let text): "message returned as unroutable: \(code) \(text)"
        case .nacked: "the broker nacked the message"
        case .confirmLost(let reason): "publisher confirm lost: \(reason)"
        case .staleDelivery: "the delivery's channel has closed; the broker will redeliver the message"
        }
    }

    /// The AMQP reply code, where the broker gave one.
    public var replyCode: Int? {
        switch self {
        case .connectionClosed(let code, _), .channelClosed(let code, _), .unroutable(let code, _): code
        default: nil
        }
    }

    /// Errors after which the connection is unusable and must be replaced.
    var endsConnection: Bool {
        switch self {
        case .connectionClosed, .library: true
        default: false
        }
    }
}

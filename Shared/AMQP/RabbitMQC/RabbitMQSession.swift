import CAMQPShim
import CRabbitMQ
import Foundation

// Every librabbitmq call of the module lives in this file. A RabbitMQSession is one open
// connection; it is not thread-safe and is only ever touched by its ConnectionLoop's thread.

/// AMQP method ids (class << 16 | method). librabbitmq defines them as casting macros, which
/// Swift does not import.
enum MethodID {
    static let connectionClose: amqp_method_number_t = 0x000A_0032
    static let connectionCloseOk: amqp_method_number_t = 0x000A_0033
    static let connectionBlocked: amqp_method_number_t = 0x000A_003C
    static let connectionUnblocked: amqp_method_number_t = 0x000A_003D
    static let channelClose: amqp_method_number_t = 0x0014_0028
    static let channelCloseOk: amqp_method_number_t = 0x0014_0029
    static let basicCancel: amqp_method_number_t = 0x003C_001E
    static let basicReturn: amqp_method_number_t = 0x003C_0032
    static let basicDeliver: amqp_method_number_t = 0x003C_003C
    static let basicAck: amqp_method_number_t = 0x003C_0050
    static let basicNack: amqp_method_number_t = 0x003C_0078
}

/// Something the broker sent without being asked, copied out of librabbitmq's buffers.
enum InboundEvent {
    case delivery(channel: UInt16, InboundDelivery)
    case publishAck(deliveryTag: UInt64, multiple: Bool)
    case publishNack(deliveryTag: UInt64, multiple: Bool)
    case returned(replyCode: Int, replyText: String, messageId: String?)
    case channelClosed(channel: UInt16, AMQPError)
    case consumerCancelled(consumerTag: String)
    case blocked(reason: String)
    case unblocked
    case ignored
}

/// The fields of a basic.deliver with its content.
struct InboundDelivery {
    var consumerTag: String
    var deliveryTag: UInt64
    var redelivered: Bool
    var exchange: String
    var routingKey: String
    var properties: AMQPProperties
    var body: [UInt8]
}

/// One open connection to the broker, with its publishing and control channels.
final class RabbitMQSession {
    /// Channel 1 publishes, in confirm mode. A broker error while publishing (say, a missing
    /// exchange) closes only this channel, not the consumers'.
    static let publishChannel: UInt16 = 1
    /// Channel 2 carries declarations; a refused one closes only this channel.
    static let controlChannel: UInt16 = 2
    /// Consumers get a channel each from here up, so each has its own prefetch and a consumer's
    /// channel error leaves the others running.
    static let firstConsumerChannel: UInt16 = 3

    private let state: amqp_connection_state_t
    let socketDescriptor: Int32

    private init(state: amqp_connection_state_t) {
        self.state = state
        self.socketDescriptor = amqp_get_sockfd(state)
    }

    deinit {
        // Destroys the socket too; no close handshake (close() does that when there is time).
        amqp_destroy_connection(state)
    }

    // MARK: Opening and closing

    static func open(_ configuration: AMQPConfiguration) throws -> RabbitMQSession {
        guard let state = amqp_new_connection() else {
            throw AMQPError.library(status: -1, message: "out of memory", during: "creating a connection")
        }
        var opened = false
        defer { if !opened { amqp_destroy_connection(state) } }

        guard let socket = try makeSocket(state, configuration) else {
            throw AMQPError.library(status: -1, message: "could not create a socket", during: "connecting")
        }
        var connectTimeout = configuration.connectTimeout.timeval
        try check(
            amqp_socket_open_noblock(socket, configuration.host, Int32(configuration.port), &connectTimeout),
            during: "connecting to \(configuration.host):\(configuration.port)")
        var handshakeTimeout = configuration.connectTimeout.timeval
        try check(amqp_set_handshake_timeout(state, &handshakeTimeout), during: "setting the handshake timeout")
        var rpcTimeout = configuration.rpcTimeout.timeval
        try check(amqp_set_rpc_timeout(state, &rpcTimeout), during: "setting the RPC timeout")

        let reply = bazaar_amqp_login(
            state, configuration.virtualHost, 0, Int32(AMQP_DEFAULT_FRAME_SIZE), Int32(configuration.heartbeat),
            configuration.connectionName, configuration.user, configuration.password)
        try check(reply, state: state, channel: 0, during: "logging in as \(configuration.user)")

        let session = RabbitMQSession(state: state)
        opened = true
        try session.openChannel(publishChannel)
        try session.enableConfirms()
        try session.openChannel(controlChannel)
        return session
    }

    private static func makeSocket(
        _ state: amqp_connection_state_t, _ configuration: AMQPConfiguration
    ) throws -> OpaquePointer? {
        guard let tls = configuration.tls else { return amqp_tcp_socket_new(state) }
        guard let socket = amqp_ssl_socket_new(state) else { return nil }
        amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
        amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        if let path = tls.caCertificatePath {
            try check(amqp_ssl_socket_set_cacert(socket, path), during: "loading CA certificates from \(path)")
        }
        if let certificate = tls.clientCertificatePath, let key = tls.clientKeyPath {
            try check(amqp_ssl_socket_set_key(socket, certificate, key), during: "loading the client certificate")
        }
        return socket
    }

    /// Says goodbye properly: `connection.close`, bounded by the RPC timeout.
    func close() {
        _ = amqp_connection_close(state, Int32(AMQP_REPLY_SUCCESS))
    }

    func openChannel(_ channel: UInt16) throws {
        amqp_channel_open(state, channel)
        try checkLastReply(channel: channel, during: "opening channel \(channel)")
    }

    /// Puts the publishing channel in confirm mode: the broker acks (or nacks) every message.
    func enableConfirms() throws {
        amqp_confirm_select(state, Self.publishChannel)
        try checkLastReply(channel: Self.publishChannel, during: "enabling publisher confirms")
    }

    func closeChannel(_ channel: UInt16) throws {
        try Self.check(
            amqp_channel_close(state, channel, Int32(AMQP_REPLY_SUCCESS)), state: state, channel: channel,
            during: "closing channel \(channel)")
    }

    /// Re-opens the control channel after the broker closed it for a refused declaration.
    private func reopeningControlChannel<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch AMQPError.channelClosed(let code, let text) {
            try openChannel(Self.controlChannel)
            throw AMQPError.channelClosed(replyCode: code, replyText: text)
        }
    }

    // MARK: Topology

    func declare(_ exchange: ExchangeSpec) throws {
        try reopeningControlChannel {
            Arena.with { arena in
                _ = amqp_exchange_declare(
                    state, Self.controlChannel, arena.bytes(exchange.name), arena.bytes(exchange.kind.rawValue), 0,
                    exchange.durable ? 1 : 0, 0, 0, arena.table(exchange.arguments))
            }
            try checkLastReply(channel: Self.controlChannel, during: "declaring exchange \(exchange.name)")
        }
    }

    @discardableResult
    func declare(_ queue: QueueSpec) throws -> (messages: Int, consumers: Int) {
        try reopeningControlChannel {
            let ok = Arena.with { arena in
                amqp_queue_declare(
                    state, Self.controlChannel, arena.bytes(queue.name), 0, queue.durable ? 1 : 0,
                    queue.exclusive ? 1 : 0, queue.autoDelete ? 1 : 0, arena.table(queue.arguments))
            }
            try checkLastReply(channel: Self.controlChannel, during: "declaring queue \(queue.name)")
            guard let ok else { return (0, 0) }
            return (Int(ok.pointee.message_count), Int(ok.pointee.consumer_count))
        }
    }

    func declare(_ binding: BindingSpec) throws {
        try reopeningControlChannel {
            Arena.with { arena in
                _ = amqp_queue_bind(
                    state, Self.controlChannel, arena.bytes(binding.queue), arena.bytes(binding.exchange),
                    arena.bytes(binding.routingKey), arena.table(binding.arguments))
            }
            try checkLastReply(
                channel: Self.controlChannel,
                during: "binding \(binding.queue) to \(binding.exchange) with \(binding.routingKey)")
        }
    }

    /// Messages and consumers of an existing queue (a passive declare).
    func inspectQueue(_ name: String) throws -> (messages: Int, consumers: Int) {
        try reopeningControlChannel {
            let ok = Arena.with { arena in
                amqp_queue_declare(state, Self.controlChannel, arena.bytes(name), 1, 0, 0, 0, amqp_empty_table)
            }
            try checkLastReply(channel: Self.controlChannel, during: "inspecting queue \(name)")
            guard let ok else { return (0, 0) }
            return (Int(ok.pointee.message_count), Int(ok.pointee.consumer_count))
        }
    }

    @discardableResult
    func purgeQueue(_ name: String) throws -> Int {
        try reopeningControlChannel {
            let ok = Arena.with { arena in amqp_queue_purge(state, Self.controlChannel, arena.bytes(name)) }
            try checkLastReply(channel: Self.controlChannel, during: "purging queue \(name)")
            return Int(ok?.pointee.message_count ?? 0)
        }
    }

    func deleteQueue(_ name: String) throws {
        try reopeningControlChannel {
            Arena.with { arena in _ = amqp_queue_delete(state, Self.controlChannel, arena.bytes(name), 0, 0) }
            try checkLastReply(channel: Self.controlChannel, during: "deleting queue \(name)")
        }
    }

    func deleteExchange(_ name: String) throws {
        try reopeningControlChannel {
            Arena.with { arena in _ = amqp_exchange_delete(state, Self.controlChannel, arena.bytes(name), 0) }
            try checkLastReply(channel: Self.controlChannel, during: "deleting exchange \(name)")
        }
    }

    // MARK: Publishing and consuming

    /// Sends one message on the publishing channel. The confirm arrives later as an event.
    func publish(_ message: OutgoingMessage) throws {
        let status = Arena.with { arena in
            var properties = arena.properties(message.properties)
            return amqp_basic_publish(
                state, Self.publishChannel, arena.bytes(message.exchange), arena.bytes(message.routingKey),
                message.mandatory ? 1 : 0, 0, &properties, arena.bytes(message.body))
        }
        try Self.check(status, during: "publishing to \(message.exchange)")
    }

    /// Opens `channel`, sets its prefetch and starts consuming `queue` with manual acks.
    func startConsumer(channel: UInt16, queue: String, consumerTag: String, prefetch: UInt16) throws {
        try openChannel(channel)
        amqp_basic_qos(state, channel, 0, prefetch, 0)
        try checkLastReply(channel: channel, during: "setting prefetch on channel \(channel)")
        Arena.with { arena in
            _ = amqp_basic_consume(
                state, channel, arena.bytes(queue), arena.bytes(consumerTag), 0, 0, 0, amqp_empty_table)
        }
        try checkLastReply(channel: channel, during: "consuming from \(queue)")
    }

    func cancelConsumer(channel: UInt16, consumerTag: String) throws {
        Arena.with { arena in _ = amqp_basic_cancel(state, channel, arena.bytes(consumerTag)) }
        try checkLastReply(channel: channel, during: "cancelling consumer \(consumerTag)")
        try closeChannel(channel)
    }

    func ack(channel: UInt16, deliveryTag: UInt64, multiple: Bool) throws {
        try Self.check(amqp_basic_ack(state, channel, deliveryTag, multiple ? 1 : 0), during: "acking")
    }

    func nack(channel: UInt16, deliveryTag: UInt64, multiple: Bool, requeue: Bool) throws {
        try Self.check(
            amqp_basic_nack(state, channel, deliveryTag, multiple ? 1 : 0, requeue ? 1 : 0), during: "nacking")
    }

    func reject(channel: UInt16, deliveryTag: UInt64, requeue: Bool) throws {
        try Self.check(amqp_basic_reject(state, channel, deliveryTag, requeue ? 1 : 0), during: "rejecting")
    }

    // MARK: Reading what the broker sends

    /// Whether librabbitmq already holds data or frames, which poll() on the socket can't see.
    var hasBufferedInput: Bool { amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0 }

    /// The next frame if one can be read without waiting, or `nil`. Sends a heartbeat when one is
    /// due. Throws when the connection is unusable (closed by the broker, socket error).
    func nextEvent() throws -> InboundEvent? {
        var frame = amqp_frame_t()
        var noWait = Glibc.timeval(tv_sec: 0, tv_usec: 0)
        let status = amqp_simple_wait_frame_noblock(state, &frame, &noWait)
        if status == AMQP_STATUS_TIMEOUT.rawValue { return nil }
        try Self.check(status, during: "reading from the broker")
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return .ignored }

        let channel = frame.channel
        let decoded = frame.payload.method.decoded!
        switch frame.payload.method.id {
        case MethodID.basicDeliver:
            let deliver = decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            var delivery = InboundDelivery(
                consumerTag: deliver.consumer_tag.string, deliveryTag: deliver.delivery_tag,
                redelivered: deliver.redelivered != 0, exchange: deliver.exchange.string,
                routingKey: deliver.routing_key.string, properties: AMQPProperties(), body: [])
            (delivery.properties, delivery.body) = try readContent(channel: channel)
            return .delivery(channel: channel, delivery)
        case MethodID.basicAck:
            let ack = decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            return .publishAck(deliveryTag: ack.delivery_tag, multiple: ack.multiple != 0)
        case MethodID.basicNack:
            let nack = decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            return .publishNack(deliveryTag: nack.delivery_tag, multiple: nack.multiple != 0)
        case MethodID.basicReturn:
            let returned = decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let (replyCode, replyText) = (Int(returned.reply_code), returned.reply_text.string)
            let (properties, _) = try readContent(channel: channel)
            return .returned(replyCode: replyCode, replyText: replyText, messageId: properties.messageId)
        case MethodID.basicCancel:
            let cancel = decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            return .consumerCancelled(consumerTag: cancel.consumer_tag.string)
        case MethodID.channelClose:
            let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let error = AMQPError.channelClosed(replyCode: Int(close.reply_code), replyText: close.reply_text.string)
            sendCloseOk(channel: channel, method: MethodID.channelCloseOk)
            return .channelClosed(channel: channel, error)
        case MethodID.connectionClose:
            let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let error = AMQPError.connectionClosed(
                replyCode: Int(close.reply_code), replyText: close.reply_text.string)
            sendCloseOk(channel: 0, method: MethodID.connectionCloseOk)
            throw error
        case MethodID.connectionBlocked:
            let blocked = decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            return .blocked(reason: blocked.reason.string)
        case MethodID.connectionUnblocked:
            return .unblocked
        default:
            return .ignored
        }
    }

    /// Frees librabbitmq's frame memory once nothing refers to it (everything was copied out).
    func releaseBuffers() { amqp_maybe_release_buffers(state) }

    private func readContent(channel: UInt16) throws -> (AMQPProperties, [UInt8]) {
        var message = amqp_message_t()
        let reply = amqp_read_message(state, channel, &message, 0)
        // On failure librabbitmq has already freed what it allocated (without clearing the
        // pointers): destroying the message then would free it twice.
        try Self.check(reply, state: state, channel: channel, during: "reading a message")
        defer { amqp_destroy_message(&message) }
        return (message.properties.swiftProperties, message.body.array)
    }

    private func sendCloseOk(channel: UInt16, method: amqp_method_number_t) {
        var ok = amqp_channel_close_ok_t()  // both close-ok methods are empty
        _ = amqp_send_method(state, channel, method, &ok)
    }

    // MARK: Errors

    private func checkLastReply(channel: UInt16, during: String) throws {
        try Self.check(amqp_get_rpc_reply(state), state: state, channel: channel, during: during)
    }

    private static func check(_ status: Int32, during: String) throws {
        guard status < 0 else { return }
        throw AMQPError.library(status: status, message: String(cString: amqp_error_string2(status)), during: during)
    }

    /// Turns an RPC reply into a typed error, answering a broker's close with close-ok as the
    /// protocol requires.
    private static func check(
        _ reply: amqp_rpc_reply_t, state: amqp_connection_state_t, channel: UInt16, during: String
    ) throws {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            throw AMQPError.library(
                status: reply.library_error, message: String(cString: amqp_error_string2(reply.library_error)),
                during: during)
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == MethodID.channelClose {
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                var ok = amqp_channel_close_ok_t()
                _ = amqp_send_method(state, channel, MethodID.channelCloseOk, &ok)
                throw AMQPError.channelClosed(replyCode: Int(close.reply_code), replyText: close.reply_text.string)
            }
            if reply.reply.id == MethodID.connectionClose {
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                var ok = amqp_connection_close_ok_t()
                _ = amqp_send_method(state, 0, MethodID.connectionCloseOk, &ok)
                throw AMQPError.connectionClosed(
                    replyCode: Int(close.reply_code), replyText: close.reply_text.string)
            }
            throw AMQPError.library(status: -1, message: "unexpected server method \(reply.reply.id)", during: during)
        default:
            throw AMQPError.library(status: -1, message: "no reply", during: during)
        }
    }
}

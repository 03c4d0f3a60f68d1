import Foundation

/// Where and how to connect to RabbitMQ.
///
/// Usually built from a URL — `amqp://user:pass@host:port/vhost` or `amqps://…` for TLS — with
/// the rest left at defaults that suit a service: heartbeats every 30 s, RPCs that give up
/// after 10 s instead of waiting forever, and reconnection with capped exponential back-off.
public struct AMQPConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    /// The virtual host; `/` when the URL has no path (the URL spells it `%2f`).
    public var virtualHost: String
    /// TLS settings; `nil` for a plain TCP connection.
    public var tls: TLS?

    /// Shown by the broker (`rabbitmqctl list_connections client_properties`, management UI),
    /// so an operator can tell which process holds a connection.
    public var connectionName: String
    /// Seconds between heartbeats; 0 turns them off. A connection silent for twice this long is
    /// considered dead and replaced.
    public var heartbeat: Int
    /// How long opening the socket and the AMQP handshake may take.
    public var connectTimeout: Duration
    /// How long a synchronous broker call (declare, bind, consume…) may wait for its reply;
    /// librabbitmq would otherwise wait forever on a broker that stopped answering.
    public var rpcTimeout: Duration
    /// Back-off between reconnection attempts: starts at `initial`, doubles, never exceeds `maximum`.
    public var reconnectBackoff: Backoff

    /// TLS for `amqps://` URLs, through librabbitmq's OpenSSL socket.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the certificate authorities to trust; the system's when `nil`.
        public var caCertificatePath: String?
        /// PEM files of a client certificate and its key, for brokers that ask for one.
        public var clientCertificatePath: String?
        public var clientKeyPath: String?
        /// Check the broker's certificate chain and that it names `host`. Only a test against a
        /// throw-away broker should turn these off.
        public var verifyPeer: Bool
        public var verifyHostname: Bool

        public init(
            caCertificatePath: String? = nil, clientCertificatePath: String? = nil,
            clientKeyPath: String? = nil, verifyPeer: Bool = true, verifyHostname: Bool = true
        ) {
            self.caCertificatePath = caCertificatePath
            self.clientCertificatePath = clientCertificatePath
            self.clientKeyPath = clientKeyPath
            self.verifyPeer = verifyPeer
            self.verifyHostname = verifyHostname
        }
    }

    /// Capped exponential back-off.
    public struct Backoff: Sendable, Equatable {
        public var initial: Duration
        public var maximum: Duration

        public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
            self.initial = initial
            self.maximum = maximum
        }

        /// The delay before attempt `attempt` (0-based), with ±20% jitter so that many
        /// clients cut off together don't all come back in the same millisecond.
        public func delay(forAttempt attempt: Int) -> Duration {
            let exponent = min(attempt, 30)
            let uncapped = initial * (1 << exponent)
            let capped = min(uncapped, maximum)
            return capped * Double.random(in: 0.8...1.2)
        }
    }

    public init(
        host: String = "127.0.0.1", port: Int = 5672, user: String = "guest", password: String = "guest",
        virtualHost: String = "/", tls: TLS? = nil, connectionName: String = "bazaar",
        heartbeat: Int = 30, connectTimeout: Duration = .seconds(10), rpcTimeout: Duration = .seconds(10),
        reconnectBackoff: Backoff = Backoff()
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.virtualHost = virtualHost
        self.tls = tls
        self.connectionName = connectionName
        self.heartbeat = heartbeat
        self.connectTimeout = connectTimeout
        self.rpcTimeout = rpcTimeout
        self.reconnectBackoff = reconnectBackoff
    }

    /// Parses `amqp://user:pass@host:port/vhost` or `amqps://…`.
    ///
    /// Follows RabbitMQ's URI spec: user, password and vhost are percent-decoded; an absent
    /// path means the vhost `/`; the port defaults to 5672 (5671 for `amqps`). Query
    /// parameters: `heartbeat` (seconds), `connection_timeout` (milliseconds), and for TLS
    /// `cacertfile`, `certfile`, `keyfile`, `verify` (`verify_peer` or `verify_none`).
    public init(url string: String, connectionName: String = "bazaar") throws {
        guard let components = URLComponents(string: string), let scheme = components.scheme?.lowercased()
        else { throw AMQPError.invalidURL(string, reason: "not a URL") }
        guard scheme == "amqp" || scheme == "amqps" else {
            throw AMQPError.invalidURL(string, reason: "scheme must be amqp or amqps")
        }
        let secure = scheme == "amqps"
        self.init(
            host: components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1",
            port: components.port ?? (secure ? 5671 : 5672),
            user: components.user?.removingPercentEncoding ?? "guest",
            password: components.password?.removingPercentEncoding ?? "guest",
            connectionName: connectionName)
        // URLComponents.path is already percent-decoded, which would make "/%2f" and "//" alike;
        // the encoded path keeps the distinction RabbitMQ's spec makes.
        let path = components.percentEncodedPath
        if !path.isEmpty {
            let encoded = String(path.dropFirst())
            guard !encoded.contains("/") else {
                throw AMQPError.invalidURL(string, reason: "a vhost containing / must be percent-encoded (%2f)")
            }
            virtualHost = encoded.removingPercentEncoding ?? encoded
        }
        var tls = secure ? TLS() : nil
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "heartbeat":
                guard let seconds = Int(value), seconds >= 0 else {
                    throw AMQPError.invalidURL(string, reason: "heartbeat must be a whole number of seconds")
                }
                heartbeat = seconds
            case "connection_timeout":
                guard let milliseconds = Int(value), milliseconds > 0 else {
                    throw AMQPError.invalidURL(string, reason: "connection_timeout must be milliseconds > 0")
                }
                connectTimeout = .milliseconds(milliseconds)
            case "cacertfile": tls?.caCertificatePath = value
            case "certfile": tls?.clientCertificatePath = value
            case "keyfile": tls?.clientKeyPath = value
            case "verify":
                tls?.verifyPeer = value != "verify_none"
                tls?.verifyHostname = value != "verify_none"
            default:
                throw AMQPError.invalidURL(string, reason: "unknown parameter \(item.name)")
            }
        }
        self.tls = tls
    }

    /// The URL without its password: safe for logs.
    public var redactedURL: String {
        let vhost = virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? virtualHost
        return "\(tls == nil ? "amqp" : "amqps")://\(user)@\(host):\(port)/\(vhost)"
    }
}

extension Duration {
    var timeval: timeval {
        let (seconds, attoseconds) = components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

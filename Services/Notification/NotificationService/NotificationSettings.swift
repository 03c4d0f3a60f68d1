import Foundation
import ServiceKit

/// The notification service's own settings, beside the common `ServiceSettings`: how webhooks
/// are delivered.
public struct NotificationSettings: Sendable {
    /// `WEBHOOK_MAX_ATTEMPTS`: attempts per delivery, the first included, before it is `failed`.
    /// Default 8.
    public var maximumAttempts: Int
    /// `WEBHOOK_BACKOFF_BASE_MS`: the delay after the first failed attempt; it doubles with each
    /// further one, with jitter. Default 1000.
    public var backoffBase: Duration
    /// `WEBHOOK_BACKOFF_MAX_MS`: the longest delay between two attempts. Default 600000 (10 min).
    public var backoffMaximum: Duration
    /// `WEBHOOK_CONNECT_TIMEOUT_MS`: how long to wait for a receiver to accept the connection.
    /// Default 2000.
    public var connectTimeout: Duration
    /// `WEBHOOK_TIMEOUT_MS`: how long a whole attempt may take, connection to last byte of the
    /// answer; a receiver that takes longer has failed that attempt. Default 10000.
    public var totalTimeout: Duration
    /// `WEBHOOK_BREAKER_FAILURES`: consecutive failures towards one host that open its circuit
    /// breaker. Default 5.
    public var breakerFailures: Int
    /// `WEBHOOK_BREAKER_OPEN_SECONDS`: how long an open breaker holds a host's deliveries back
    /// before one probe is let through. Default 30.
    public var breakerOpenDuration: Duration
    /// `WEBHOOK_CONCURRENCY`: deliveries one instance sends at the same time. Default 16.
    public var concurrency: Int
    /// `WEBHOOK_HOST_CONCURRENCY`: of those, how many may go to one host at the same time, so
    /// that a slow receiver can't take every slot. Default 4.
    public var hostConcurrency: Int
    /// `WEBHOOK_POLL_INTERVAL_MS`: how often an idle delivery worker looks for due deliveries.
    /// Default 500.
    public var pollInterval: Duration
    /// `WEBHOOK_ALLOW_PRIVATE_TARGETS`: `true` accepts webhook URLs on loopback and private
    /// networks (the local stack and the tests, whose receivers run on 127.0.0.1). Default
    /// `false`: in production a webhook must not reach inside our network.
    public var allowPrivateTargets: Bool

    public var backoff: DeliveryBackoff {
        DeliveryBackoff(base: backoffBase, maximum: backoffMaximum, maximumAttempts: maximumAttempts)
    }

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        func integer(_ key: String, default value: Int, in range: ClosedRange<Int>) throws -> Int {
            guard let text = environment[key] else { return value }
            guard let number = Int(text), range.contains(number) else {
                throw SettingsError(key: key, value: text, expected: "a whole number in \(range)")
            }
            return number
        }
        maximumAttempts = try integer("WEBHOOK_MAX_ATTEMPTS", default: 8, in: 1...100)
        backoffBase = .milliseconds(try integer("WEBHOOK_BACKOFF_BASE_MS", default: 1000, in: 1...3_600_000))
        backoffMaximum = .milliseconds(try integer("WEBHOOK_BACKOFF_MAX_MS", default: 600_000, in: 1...86_400_000))
        connectTimeout = .milliseconds(try integer("WEBHOOK_CONNECT_TIMEOUT_MS", default: 2000, in: 10...600_000))
        totalTimeout = .milliseconds(try integer("WEBHOOK_TIMEOUT_MS", default: 10_000, in: 10...600_000))
        breakerFailures = try integer("WEBHOOK_BREAKER_FAILURES", default: 5, in: 1...10_000)
        breakerOpenDuration = .seconds(try integer("WEBHOOK_BREAKER_OPEN_SECONDS", default: 30, in: 1...86_400))
        concurrency = try integer("WEBHOOK_CONCURRENCY", default: 16, in: 1...1000)
        hostConcurrency = try integer("WEBHOOK_HOST_CONCURRENCY", default: 4, in: 1...1000)
        pollInterval = .milliseconds(try integer("WEBHOOK_POLL_INTERVAL_MS", default: 500, in: 10...600_000))
        switch environment["WEBHOOK_ALLOW_PRIVATE_TARGETS"] ?? "false" {
        case "true": allowPrivateTargets = true
        case "false": allowPrivateTargets = false
        case let other: throw SettingsError(key: "WEBHOOK_ALLOW_PRIVATE_TARGETS", value: other, expected: "true or false")
        }
    }
}

import Foundation
import ServiceKit

/// The order service's own settings, beside the common `ServiceSettings`.
public struct OrderSettings: Sendable {
    /// `ORDER_PENDING_TIMEOUT_SECONDS`: an order still pending this long after it was placed is
    /// cancelled as `timed_out`. Default 30.
    public var pendingDeadline: Duration
    /// How often pending orders are checked against their deadline (a quarter of it, at most 1 s).
    public var sweepInterval: Duration { min(pendingDeadline / 4, .seconds(1)) }

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let text = environment["ORDER_PENDING_TIMEOUT_SECONDS"] ?? "30"
        guard let seconds = Int(text), (1...86_400).contains(seconds) else {
            throw SettingsError(key: "ORDER_PENDING_TIMEOUT_SECONDS", value: text, expected: "whole seconds from 1 to 86400")
        }
        pendingDeadline = .seconds(seconds)
    }
}

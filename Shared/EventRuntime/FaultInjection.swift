import Foundation

/// Crashes and duplicates on purpose, for the chaos suite (`make chaos`): the runtime's
/// promises are about what survives a crash at the worst moment, and this is how we pick the
/// moment. Off unless `BAZAAR_FAULTS` is set; never set it in production.
///
/// `BAZAAR_FAULTS` is a comma-separated list of `point=probability`, e.g.
/// `consumer.before-ack=0.01,relay.duplicate=0.05`. At a crash point, the process prints one
/// line to standard error and calls `abort()` with that probability; `relay.duplicate` is the
/// share of events the relay publishes twice.
public struct FaultInjection: Sendable, Equatable {
    /// The moments worth crashing at: between each step whose order the guarantees depend on.
    public enum CrashPoint: String, Sendable, CaseIterable {
        /// The relay read committed outbox rows and has not published them.
        case relayBeforePublish = "relay.before-publish"
        /// The relay's messages are on the wire; their confirms have not arrived.
        case relayBeforeConfirm = "relay.before-confirm"
        /// The broker confirmed; the rows are not yet marked published.
        case relayBeforeMarkPublished = "relay.before-mark-published"
        /// A handler ran inside its transaction, which has not committed.
        case consumerBeforeCommit = "consumer.before-commit"
        /// A handler's transaction committed; the delivery is not acked.
        case consumerBeforeAck = "consumer.before-ack"
    }

    /// The environment variable that switches faults on.
    public static let environmentKey = "BAZAAR_FAULTS"
    /// No faults: the default.
    public static let none = FaultInjection()

    public private(set) var crashProbabilities: [CrashPoint: Double] = [:]
    /// The share of events the relay publishes twice (consumers must absorb the copies).
    public private(set) var duplicateShare = 0.0

    public init() {}

    /// Parses a `BAZAAR_FAULTS` value; `nil` or empty means no faults.
    public init(parsing text: String?) throws(FaultInjectionError) {
        guard let text, !text.isEmpty else { return }
        for item in text.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, let probability = Double(parts[1]), (0...1).contains(probability) else {
                throw FaultInjectionError(item: String(item), reason: "expected point=probability, a probability from 0 to 1")
            }
            if parts[0] == "relay.duplicate" {
                duplicateShare = probability
            } else if let point = CrashPoint(rawValue: parts[0]) {
                crashProbabilities[point] = probability
            } else {
                let known = CrashPoint.allCases.map(\.rawValue) + ["relay.duplicate"]
                throw FaultInjectionError(item: String(item), reason: "unknown point; known: \(known.joined(separator: ", "))")
            }
        }
    }

    public var isActive: Bool { !crashProbabilities.isEmpty || duplicateShare > 0 }

    /// Crashes the process here, with the probability configured for `point`.
    public func maybeCrash(at point: CrashPoint) {
        guard let probability = crashProbabilities[point], Double.random(in: 0..<1) < probability else { return }
        FileHandle.standardError.write(Data("fault injection: crashing at \(point.rawValue)\n".utf8))
        abort()
    }

    /// Whether to publish this event a second time.
    public func shouldDuplicate() -> Bool {
        duplicateShare > 0 && Double.random(in: 0..<1) < duplicateShare
    }
}

public struct FaultInjectionError: Error, CustomStringConvertible {
    public var item: String
    public var reason: String
    public var description: String { "\(FaultInjection.environmentKey): \"\(item)\": \(reason)" }
}

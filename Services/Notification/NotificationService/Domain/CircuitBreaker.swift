/// A circuit breaker for one destination host: the state machine, with time passed in.
///
/// Closed, it lets calls through and counts consecutive failures; at `failureThreshold` it opens.
/// Open, it lets nothing through until `openDuration` has passed; then it is half-open and lets
/// exactly one call through as a probe (the others keep waiting): a success closes it, a failure
/// opens it again for another `openDuration`. So a host that is down gets a probe now and then
/// instead of every retry of every delivery, and traffic resumes by itself when it recovers.
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case closed(consecutiveFailures: Int)
        case open(until: ContinuousClock.Instant)
        /// One probe is out; everything else waits for its outcome.
        case halfOpen
    }

    /// What a caller may do now.
    public enum Decision: Sendable, Equatable {
        case proceed
        /// Don't call the host before this instant.
        case wait(until: ContinuousClock.Instant)
    }

    public let failureThreshold: Int
    public let openDuration: Duration
    public private(set) var state: State = .closed(consecutiveFailures: 0)

    public init(failureThreshold: Int, openDuration: Duration) {
        self.failureThreshold = max(failureThreshold, 1)
        self.openDuration = openDuration
    }

    /// Asks to make a call at `now`; a `.proceed` must be followed by `recordSuccess` or
    /// `recordFailure` (in half-open state it was the probe).
    public mutating func decide(at now: ContinuousClock.Instant) -> Decision {
        switch state {
        case .closed: return .proceed
        case .open(let until) where now >= until:
            state = .halfOpen
            return .proceed
        case .open(let until): return .wait(until: until)
        // The probe's outcome is not known yet: ask again after a short while.
        case .halfOpen: return .wait(until: now + min(openDuration, .seconds(1)))
        }
    }

    public mutating func recordSuccess() {
        state = .closed(consecutiveFailures: 0)
    }

    public mutating func recordFailure(at now: ContinuousClock.Instant) {
        switch state {
        case .closed(let failures) where failures + 1 >= failureThreshold: state = .open(until: now + openDuration)
        case .closed(let failures): state = .closed(consecutiveFailures: failures + 1)
        case .halfOpen: state = .open(until: now + openDuration)
        // Calls let through before it opened, failing late: the breaker is already open.
        case .open: break
        }
    }

    public var isOpen: Bool {
        if case .closed = state { return false }
        return true
    }
}

/// When a failed webhook delivery is tried again: exponential back-off, capped, with jitter.
///
/// The delay after failed attempt `n` (1-based) is `base · 2^(n-1)`, at most `maximum`, of which
/// a random half is dropped ("equal jitter"): retries of many deliveries that failed together
/// (a receiver that was down) spread out instead of arriving at the recovered receiver at once,
/// and a retry never comes sooner than half the nominal delay.
public struct DeliveryBackoff: Sendable, Equatable {
    public var base: Duration
    public var maximum: Duration
    /// Attempts in all, the first included; after the last failed one the delivery is `failed`.
    public var maximumAttempts: Int

    public init(base: Duration, maximum: Duration, maximumAttempts: Int) {
        self.base = base
        self.maximum = maximum
        self.maximumAttempts = maximumAttempts
    }

    /// The delay before the next attempt without jitter, after `attempts` failed attempts.
    public func nominalDelay(afterAttempts attempts: Int) -> Duration {
        let doublings = min(max(attempts - 1, 0), 40)
        let delay = base * Double(1 << UInt64(doublings))
        return min(delay, maximum)
    }

    /// The delay before the next attempt after `attempts` failed attempts, or nil when that was
    /// the last one allowed. `random` is a number in 0...1 (injected so tests can pin it).
    public func delay(afterAttempts attempts: Int, random: Double = Double.random(in: 0...1)) -> Duration? {
        guard attempts < maximumAttempts else { return nil }
        let nominal = nominalDelay(afterAttempts: attempts)
        return nominal / 2 + nominal / 2 * min(max(random, 0), 1)
    }
}

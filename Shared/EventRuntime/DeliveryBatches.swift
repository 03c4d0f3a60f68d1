import AMQP
import Synchronization

/// A consumer's deliveries in batches of those that have already arrived: the first of a batch is
/// waited for, the others are taken only if they are there, so a batch never waits for company
/// and a lone delivery is handled as soon as it comes.
final class DeliveryBatches: Sendable {
    private struct State {
        /// Never more than the consumer's prefetch: the broker sends no more unacked deliveries.
        var buffered: [AMQPDelivery] = []
        /// Set when the deliveries end: nil error for a normal end.
        var ended: (any Error)?? = nil
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Moves the consumer's deliveries into the buffer until they end or the task is cancelled.
    func fill(from consumer: AMQPConsumer) async throws {
        do {
            for try await delivery in consumer {
                wake { $0.buffered.append(delivery) }
            }
            wake { $0.ended = .some(nil) }
        } catch {
            wake { $0.ended = .some(error) }
            throw error
        }
    }

    /// The next batch, at most `limit` deliveries in their order of arrival; nil once the
    /// deliveries have ended and all were taken.
    func next() async throws -> [AMQPDelivery]? {
        while true {
            let taken: Result<[AMQPDelivery]?, any Error>? = state.withLock { state in
                if !state.buffered.isEmpty {
                    let batch = Array(state.buffered.prefix(limit))
                    state.buffered.removeFirst(batch.count)
                    return .success(batch)
                }
                guard let ended = state.ended else { return nil }
                return ended.map { .failure($0) } ?? .success(nil)
            }
            if let taken { return try taken.get() }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state in
                    if !state.buffered.isEmpty || state.ended != nil { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    private func wake(_ change: (inout State) -> Void) {
        state.withLock { state in
            change(&state)
            return state.waiter.take()
        }?.resume()
    }
}

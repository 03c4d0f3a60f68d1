/// Thrown by ``within(_:_:)`` when the work takes longer than allowed.
public struct TimedOut: Error, CustomStringConvertible {
    public let limit: Duration
    public var description: String { "timed out after \(limit)" }
}

/// Runs `body`, failing with ``TimedOut`` if it takes longer than `limit`: integration tests wait
/// for messages, and a missing message must fail the test, not hang it.
public func within<T: Sendable>(
    _ limit: Duration, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimedOut(limit: limit)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

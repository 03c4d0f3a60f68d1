import Foundation
import Logging
import Postgres
import Synchronization
import TestSupport

/// The local stack's database, and helpers that keep each test apart from the others (they run
/// in parallel): unique names, and connections that are always closed.
enum TestDatabase {
    static func configuration(applicationName: String = "bazaar-postgres-tests") throws -> PostgresConfiguration {
        try PostgresConfiguration(url: StackEnvironment.databaseURL, applicationName: applicationName)
    }

    /// Warnings only: reconnection tests log them on purpose.
    static let logger: Logger = {
        var logger = Logger(label: "PostgresTests")
        logger.logLevel = .warning
        return logger
    }()

    /// `prefix_` and 12 random hex digits: a schema, table or channel name no other test uses.
    static func uniqueName(_ prefix: String) -> String {
        prefix + "_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
    }

    static func withConnection<Result: Sendable>(
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let connection = try await PostgresConnection.connect(configuration: configuration(), logger: logger)
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    static func withPool<Result: Sendable>(
        maxConnections: Int = 2, _ body: (PostgresPool) async throws -> Result
    ) async throws -> Result {
        let pool = PostgresPool(configuration: try configuration(), maxConnections: maxConnections, logger: logger)
        do {
            let result = try await body(pool)
            await pool.shutdown()
            return result
        } catch {
            await pool.shutdown()
            throw error
        }
    }

    /// Ends another session's server process, as an operator or a failover would, and waits
    /// (up to 5 s) until it has exited.
    static func terminateBackend(_ pid: Int32) async throws {
        try await withConnection { admin in
            let rows = try await admin.query("SELECT pg_terminate_backend($1, 5000) AS done", pid)
            guard try rows.first?.decode(Bool.self, column: "done") == true else {
                throw TestFailure("backend \(pid) did not terminate")
            }
        }
    }

    /// Waits until `condition` holds, checking every 20 ms, for at most `limit`.
    static func eventually(
        within limit: Duration = .seconds(5), _ what: String, _ condition: () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + limit
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw TestFailure("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Counts calls from any thread (the listener's `onListening` runs on its own thread).
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}

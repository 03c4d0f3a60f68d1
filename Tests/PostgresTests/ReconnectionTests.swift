import Foundation
import Postgres
import Testing

@Suite("Dropped connections")
struct ReconnectionTests {
    @Test func aStatementOnADroppedConnectionSaysSoAndTheConnectionRecovers() async throws {
        try await TestDatabase.withConnection { connection in
            let pid = await connection.backendPID
            try await TestDatabase.terminateBackend(pid)

            let error = await #expect(throws: PostgresError.self) { try await connection.query("SELECT 1") }
            #expect(error?.kind == .connectionLost)
            #expect(error?.isConnectionLost == true)

            #expect(try await connection.reconnectIfNeeded())
            #expect(await connection.backendPID != pid)
            let one = try await connection.query("SELECT 1 AS one").first?.decode(Int.self, column: "one")
            #expect(one == 1)
            #expect(try await connection.reconnectIfNeeded() == false)
        }
    }

    @Test func thePoolReplacesAConnectionDroppedWhileIdle() async throws {
        try await TestDatabase.withPool(maxConnections: 1) { pool in
            let before = try #require(
                try await pool.query("SELECT pg_backend_pid() AS pid").first?.decode(Int32.self, column: "pid"))
            try await TestDatabase.terminateBackend(before)

            // The checkout notices the closed socket and reconnects before running anything.
            let after = try #require(
                try await pool.query("SELECT pg_backend_pid() AS pid").first?.decode(Int32.self, column: "pid"))
            #expect(after != before)
        }
    }

    @Test func aPooledTransactionReconnectsAConnectionDroppedWhileIdle() async throws {
        try await TestDatabase.withPool(maxConnections: 1) { pool in
            let before = try await pool.transaction { tx in
                try tx.query("SELECT pg_backend_pid() AS pid")[0].decode(Int32.self, column: "pid")
            }
            try await TestDatabase.terminateBackend(before)

            let after = try await pool.transaction { tx in
                try tx.query("SELECT pg_backend_pid() AS pid")[0].decode(Int32.self, column: "pid")
            }
            #expect(after != before)
        }
    }

    @Test func thePoolRecoversAfterAStatementFailedOnADroppedConnection() async throws {
        try await TestDatabase.withPool(maxConnections: 1) { pool in
            // Drop the connection while it is checked out, so the statement itself meets the cut.
            let error = await #expect(throws: PostgresError.self) {
                try await pool.withConnection { connection in
                    try await TestDatabase.terminateBackend(await connection.backendPID)
                    return try await connection.query("SELECT 1")
                }
            }
            #expect(error?.isConnectionLost == true)
            let one = try await pool.query("SELECT 1 AS one").first?.decode(Int.self, column: "one")
            #expect(one == 1)
        }
    }
}

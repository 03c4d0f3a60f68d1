import Foundation
import Postgres
import Testing

/// `PostgresTransaction.enqueue`: statements sent with the next one that waits, or with COMMIT,
/// in one round trip (libpq's pipeline mode).
@Suite("Queued statements in a transaction")
struct PipelineTests {
    /// A table of its own with a unique column, dropped afterwards; one connection, so every
    /// statement provably runs on the same session.
    private func withTable(_ body: (PostgresConnection, String) async throws -> Void) async throws {
        let table = TestDatabase.uniqueName("queued")
        try await TestDatabase.withConnection { connection in
            try await connection.execute("CREATE TABLE \(table) (n int PRIMARY KEY)")
            do {
                try await body(connection, table)
            } catch {
                _ = try? await connection.execute("DROP TABLE \(table)")
                throw error
            }
            try await connection.execute("DROP TABLE \(table)")
        }
    }

    private func count(_ table: String, on connection: PostgresConnection) async throws -> Int? {
        try await connection.query("SELECT count(*) FROM \(table)").first?.decode(Int.self, at: 0)
    }

    @Test func queuedStatementsRunInOrderBeforeTheNextOneAndCommitWithTheTransaction() async throws {
        try await withTable { connection, table in
            let seen = try await connection.transaction { tx in
                // The same statement, new to the session, three times in one pipeline.
                for n in 1...3 { tx.enqueue("INSERT INTO \(table) (n) VALUES ($1)", n) }
                return try tx.query("SELECT array_agg(n ORDER BY n)::text FROM \(table)").first?.decode(String.self, at: 0)
            }
            #expect(seen == "{1,2,3}")
            // Only queued statements: BEGIN, the writes and COMMIT go in one round trip.
            try await connection.transaction { tx in
                tx.enqueue("INSERT INTO \(table) (n) VALUES ($1)", 4)
                tx.enqueue("UPDATE \(table) SET n = n * 10 WHERE n = $1", 4)
            }
            #expect(try await connection.query("SELECT max(n) FROM \(table)").first?.decode(Int.self, at: 0) == 40)
        }
    }

    @Test func severalReadsInOneRoundTripReturnTheRowsOfEachInOrder() async throws {
        try await withTable { connection, table in
            let (rows, changed) = try await connection.transaction { tx in
                tx.enqueue("INSERT INTO \(table) (n) VALUES (1), (2), (3)")
                let changed = try tx.execute(each: [
                    PostgresStatement("UPDATE \(table) SET n = n + 10 WHERE n > $1", 1),
                    PostgresStatement("DELETE FROM \(table) WHERE n = $1", 99),
                ])
                let rows = try tx.query(each: [
                    PostgresStatement("SELECT n FROM \(table) WHERE n < $1 ORDER BY n", 10),
                    PostgresStatement("SELECT n FROM \(table) WHERE n > $1 ORDER BY n", 10),
                    PostgresStatement("SELECT n FROM \(table) WHERE n = $1", 5),
                ])
                return (try rows.map { try $0.map { try $0.decode(Int.self, at: 0) } }, changed)
            }
            #expect(changed == [2, 0])
            #expect(rows == [[1], [12, 13], []])
        }
    }

    @Test func aQueuedStatementThatFailsRollsBackTheWholeTransaction() async throws {
        try await withTable { connection, table in
            let pid = await connection.backendPID
            let error = await #expect(throws: PostgresError.self) {
                try await connection.transaction { tx in
                    try tx.execute("INSERT INTO \(table) (n) VALUES (1)")
                    tx.enqueue("INSERT INTO \(table) (n) VALUES (1)")  // a duplicate: fails at COMMIT
                    tx.enqueue("INSERT INTO \(table) (n) VALUES (2)")
                }
            }
            #expect(error?.isUniqueViolation == true)
            #expect(try await count(table, on: connection) == 0)
            // The session is idle again, not left in a failed transaction or in pipeline mode.
            try await connection.transaction { tx in try tx.execute("INSERT INTO \(table) (n) VALUES (3)") }
            #expect(try await count(table, on: connection) == 1)
            #expect(await connection.backendPID == pid)
        }
    }

    @Test func aQueuedErrorIsThrownByTheNextStatementThatWaits() async throws {
        try await withTable { connection, table in
            try await connection.execute("INSERT INTO \(table) (n) VALUES (1)")
            let error = await #expect(throws: PostgresError.self) {
                try await connection.transaction { tx in
                    tx.enqueue("INSERT INTO \(table) (n) VALUES (1)")
                    _ = try tx.query("SELECT 1")  // skipped by the server: the insert before it failed
                    Issue.record("the query after a failed queued statement returned")
                }
            }
            #expect(error?.sqlState == "23505")
            #expect(try await count(table, on: connection) == 1)
        }
    }

    @Test func aStatementThatFailsToPrepareInAPipelineLeavesTheSessionUsable() async throws {
        try await withTable { connection, table in
            let error = await #expect(throws: PostgresError.self) {
                try await connection.transaction { tx in
                    tx.enqueue("INSERT INTO \(table) (n) VALUES ($1)", 1)
                    tx.enqueue("INSERT INTO \(table) (n) VALUS ($1)", 2)
                }
            }
            #expect(error?.sqlState == "42601")
            // Statements prepared after the failed one still get names of their own and run.
            for n in 1...2 {
                try await connection.transaction { tx in
                    tx.enqueue("INSERT INTO \(table) (n) VALUES ($1)", n)
                    tx.enqueue("INSERT INTO \(table) (n) SELECT $1::int + 100", n)
                }
            }
            #expect(
                try await connection.query("SELECT array_agg(n ORDER BY n)::text FROM \(table)").first?
                    .decode(String.self, at: 0) == "{1,2,101,102}")
        }
    }

    @Test func aPipelineCutOffSaysSoAndTheConnectionRecovers() async throws {
        try await withTable { connection, table in
            try await TestDatabase.terminateBackend(await connection.backendPID)
            let error = await #expect(throws: PostgresError.self) {
                try await connection.transaction { tx in
                    tx.enqueue("INSERT INTO \(table) (n) VALUES (1)")
                    _ = try tx.query("SELECT 1")
                }
            }
            #expect(error?.isConnectionLost == true)
            #expect(try await connection.reconnectIfNeeded())
            try await connection.transaction { tx in tx.enqueue("INSERT INTO \(table) (n) VALUES (2)") }
            #expect(try await count(table, on: connection) == 1)
        }
    }
}

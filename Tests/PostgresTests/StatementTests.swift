import Foundation
import Postgres
import Synchronization
import Testing

@Suite("Transactions, errors and the pool")
struct StatementTests {
    /// A table of its own in `public`, dropped afterwards.
    private func withTable(_ body: (PostgresPool, String) async throws -> Void) async throws {
        let table = TestDatabase.uniqueName("widgets")
        try await TestDatabase.withPool { pool in
            try await pool.execute(
                """
                CREATE TABLE \(table) (
                    id bigserial PRIMARY KEY, sku text NOT NULL, CONSTRAINT \(table)_sku_key UNIQUE (sku)
                )
                """)
            do {
                try await body(pool, table)
            } catch {
                _ = try? await pool.execute("DROP TABLE \(table)")
                throw error
            }
            try await pool.execute("DROP TABLE \(table)")
        }
    }

    struct Abandoned: Error {}

    @Test func aTransactionThatThrowsLeavesNoTrace() async throws {
        try await withTable { pool, table in
            let inserted = try await pool.transaction { tx in
                try tx.execute("INSERT INTO \(table) (sku) VALUES ($1)", "kept")
            }
            #expect(inserted == 1)

            await #expect(throws: Abandoned.self) {
                try await pool.transaction { tx in
                    try tx.execute("INSERT INTO \(table) (sku) VALUES ($1), ($2)", "gone-1", "gone-2")
                    let inside = try tx.query("SELECT count(*) AS n FROM \(table)").first?.decode(Int.self, column: "n")
                    #expect(inside == 3)  // visible inside the transaction…
                    throw Abandoned()
                }
            }
            // …and nowhere after it.
            let count = try await pool.query("SELECT count(*) AS n FROM \(table)").first?.decode(Int.self, column: "n")
            #expect(count == 1)
        }
    }

    @Test func afterCommitActionsRunOnlyOnceTheTransactionCommitted() async throws {
        try await withTable { pool, table in
            let ran = Mutex<[String]>([])
            try await pool.transaction { tx in
                tx.enqueue("INSERT INTO \(table) (sku) VALUES ($1)", "kept")
                tx.afterCommit { ran.withLock { $0.append("committed") } }
                #expect(ran.withLock { $0 }.isEmpty)  // not before the COMMIT
            }
            await #expect(throws: PostgresError.self) {
                try await pool.transaction { tx in
                    tx.afterCommit { ran.withLock { $0.append("rolled back") } }
                    tx.enqueue("INSERT INTO \(table) (sku) VALUES ($1)", "kept")  // a duplicate: no commit
                }
            }
            #expect(ran.withLock { $0 } == ["committed"])
        }
    }

    @Test func aUniqueViolationCarriesSQLStateAndConstraint() async throws {
        try await withTable { pool, table in
            try await pool.execute("INSERT INTO \(table) (sku) VALUES ($1)", "A-1")
            let error = await #expect(throws: PostgresError.self) {
                try await pool.execute("INSERT INTO \(table) (sku) VALUES ($1)", "A-1")
            }
            #expect(error?.kind == .server)
            #expect(error?.sqlState == "23505")
            #expect(error?.isUniqueViolation == true)
            #expect(error?.constraint == "\(table)_sku_key")
            #expect(error?.table == table)
            #expect(error?.detail == "Key (sku)=(A-1) already exists.")
        }
    }

    @Test func badSQLGives42601AndTheConnectionStaysUsable() async throws {
        // One connection, so the statement after the error provably runs on the same session.
        try await TestDatabase.withPool(maxConnections: 1) { pool in
            let pid = try await pool.query("SELECT pg_backend_pid() AS pid").first?.decode(Int32.self, column: "pid")
            let error = await #expect(throws: PostgresError.self) { try await pool.query("SELEC 1") }
            #expect(error?.sqlState == "42601")
            #expect(error?.message.contains("syntax error") == true)
            #expect(error?.isConnectionLost == false)

            // Also inside a transaction: it is rolled back and the session is idle again.
            await #expect(throws: PostgresError.self) {
                try await pool.transaction { tx in try tx.execute("SELECT * FROM") }
            }
            let row = try #require(try await pool.query("SELECT 1 AS one, pg_backend_pid() AS pid").first)
            #expect(try row.decode(Int.self, column: "one") == 1)
            #expect(try row.decode(Int32.self, column: "pid") == pid)
        }
    }

    @Test func thePoolNeverOpensMoreThanItsMaximum() async throws {
        try await TestDatabase.withPool(maxConnections: 2) { pool in
            // Six callers, two connections: four of them wait their turn.
            let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        try await pool.query("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)")
                            .first!.decode(Int32.self, column: "pid")
                    }
                }
                return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
            }
            #expect(pids.count <= 2)
        }
    }

    @Test func aShutDownPoolRefusesWork() async throws {
        let pool = PostgresPool(configuration: try TestDatabase.configuration(), logger: TestDatabase.logger)
        try await pool.execute("SELECT 1")
        await pool.shutdown()
        let error = await #expect(throws: PostgresError.self) { try await pool.execute("SELECT 1") }
        #expect(error?.kind == .closed)
    }
}

@Suite("Transactions whose body swallowed an error")
struct SwallowedErrorTests {
    @Test func aBodyThatCaughtAnSQLErrorCannotCommit() async throws {
        let table = TestDatabase.uniqueName("swallowed")
        try await TestDatabase.withConnection { database in
            try await database.execute("CREATE TABLE \(table) (n int)")
            await #expect(throws: PostgresError.self) {
                try await database.transaction { tx in
                    try tx.execute("INSERT INTO \(table) VALUES (1)")
                    _ = try? tx.execute("SELECT no_such_column FROM \(table)")  // aborts the transaction; error swallowed
                }
            }
            #expect(try await database.query("SELECT count(*) FROM \(table)").first?.decode(Int.self, at: 0) == 0)
            try await database.execute("DROP TABLE \(table)")
        }
    }
}

import Foundation
import Postgres
import Testing

@Suite("Migrations")
struct MigrationTests {
    private func fixtures(_ folder: String) throws -> URL {
        try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil)).appendingPathComponent(folder)
    }

    /// A schema name of its own, dropped afterwards.
    private func withSchema(_ body: (String, PostgresPool) async throws -> Void) async throws {
        let schema = TestDatabase.uniqueName("migrations")
        try await TestDatabase.withPool { pool in
            do {
                try await body(schema, pool)
            } catch {
                _ = try? await pool.execute("DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE")
                throw error
            }
            try await pool.execute("DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE")
        }
    }

    private func count(_ table: String, in schema: String, on pool: PostgresPool) async throws -> Int {
        try await pool.query("SELECT count(*) AS n FROM \"\(schema)\".\(table)").first!.decode(Int.self, column: "n")
    }

    @Test func loadsSortedByVersionAndIgnoresOtherFiles() throws {
        let migrations = try Migrations.load(from: fixtures("migrations"))
        #expect(migrations.map(\.version) == [1, 2, 10])
        #expect(migrations.map(\.name) == ["create_widgets", "seed_widgets", "add_widget_colour"])
    }

    @Test func refusesBadNamesAndDuplicateVersions() throws {
        #expect(throws: MigrationError.badFileName("create_gadgets.sql")) {
            try Migrations.load(from: fixtures("bad-name"))
        }
        #expect(throws: MigrationError.duplicateVersion(1, files: ["0001_create_a.sql", "01_create_b.sql"])) {
            try Migrations.load(from: fixtures("duplicate-version"))
        }
    }

    @Test func appliedTwiceAppliesOnce() async throws {
        let migrations = try Migrations.load(from: fixtures("migrations"))
        try await withSchema { schema, pool in
            let runner = MigrationRunner(schema: schema, logger: TestDatabase.logger)
            #expect(try await runner.run(migrations, on: pool) == [1, 2, 10])
            #expect(try await runner.run(migrations, on: pool) == [])
            #expect(try await count("schema_migrations", in: schema, on: pool) == 3)
            #expect(try await count("widgets", in: schema, on: pool) == 1)
            let colour = try await pool.query("SELECT colour FROM \"\(schema)\".widgets")
                .first?.decode(String.self, column: "colour")
            #expect(colour == "red")
        }
    }

    @Test func concurrentRunnersApplyEachMigrationExactlyOnce() async throws {
        let migrations = try Migrations.load(from: fixtures("migrations"))
        try await withSchema { schema, pool in
            // Four processes starting together, each with its own pool.
            let results = try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        try await TestDatabase.withPool(maxConnections: 1) { own in
                            let runner = MigrationRunner(schema: schema, logger: TestDatabase.logger)
                            return try await runner.run(migrations, on: own)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { $0 == [1, 2, 10] }.count == 1)
            #expect(results.filter(\.isEmpty).count == 3)
            #expect(try await count("schema_migrations", in: schema, on: pool) == 3)
            #expect(try await count("widgets", in: schema, on: pool) == 1)
        }
    }

    @Test func anEditedAppliedMigrationIsRefused() async throws {
        var migrations = try Migrations.load(from: fixtures("migrations"))
        try await withSchema { schema, pool in
            let runner = MigrationRunner(schema: schema, logger: TestDatabase.logger)
            try await runner.run(migrations, on: pool)

            let original = migrations[1]
            migrations[1].sql = "INSERT INTO widgets (sku) VALUES ('seed-2');"
            migrations.append(Migration(version: 11, name: "create_gadgets", sql: "CREATE TABLE gadgets (id int);"))
            let error = await #expect(throws: MigrationError.self) { try await runner.run(migrations, on: pool) }
            #expect(error == .checksumMismatch(
                version: 2, name: "seed_widgets", applied: original.checksum, current: migrations[1].checksum))
            // Refused whole: the new migration 11 did not run either.
            let gadgets = try await pool.query("SELECT to_regclass($1) IS NULL AS missing", "\"\(schema)\".gadgets")
            #expect(try gadgets.first?.decode(Bool.self, column: "missing") == true)
            #expect(try await count("schema_migrations", in: schema, on: pool) == 3)
        }
    }

    @Test func aMigrationThatCommitsIsRefused() async throws {
        try await withSchema { schema, pool in
            let runner = MigrationRunner(schema: schema, logger: TestDatabase.logger)
            let migrations = [Migration(version: 1, name: "sneaky", sql: "CREATE TABLE t (id int); COMMIT;")]
            await #expect(throws: MigrationError.endedTransaction(version: 1, name: "sneaky")) {
                try await runner.run(migrations, on: pool)
            }
        }
    }
}

import Logging

/// Applies a service's migrations to its schema, once each, safely from many processes at once.
///
/// Everything happens in one transaction, so a failed migration leaves the schema as it was:
/// 1. `pg_advisory_xact_lock` keyed on the schema name, so concurrent runners (several replicas
///    starting together) take turns; the lock ends with the transaction.
/// 2. `CREATE SCHEMA IF NOT EXISTS` and the `schema_migrations` table.
/// 3. For each migration: refuse if it was applied with another checksum; otherwise, if missing,
///    run it with `search_path` set to the schema and record it.
///
/// The lock is taken by the transaction's first statement. Under READ COMMITTED each later
/// statement sees everything committed before it started, so a runner that waited for the lock
/// sees the migrations its predecessor applied and skips them.
public struct MigrationRunner: Sendable {
    /// The schema the migrations create their tables in, and that holds `schema_migrations`.
    public let schema: String
    private let logger: Logger

    public init(schema: String, logger: Logger) {
        self.schema = schema
        self.logger = logger
    }

    /// Applies the missing migrations on a connection; returns the versions it applied, in order.
    @discardableResult
    public func run(_ migrations: [Migration], on connection: PostgresConnection) async throws -> [Int] {
        let quotedSchema = try PostgresIdentifier.quoted(schema)
        let (schema, logger) = (schema, logger)
        let applied = try await connection.transaction { tx in
            try Self.apply(migrations, schema: schema, quotedSchema: quotedSchema, tx: tx, logger: logger)
        }
        logger.info(
            applied.isEmpty ? "schema is up to date" : "applied migrations",
            metadata: ["schema": "\(schema)", "versions": "\(applied)"])
        return applied
    }

    /// Applies the missing migrations on a pooled connection; returns the versions it applied.
    @discardableResult
    public func run(_ migrations: [Migration], on pool: PostgresPool) async throws -> [Int] {
        try await pool.withConnection { try await run(migrations, on: $0) }
    }

    private static func apply(
        _ migrations: [Migration], schema: String, quotedSchema: String, tx: PostgresTransaction, logger: Logger
    ) throws -> [Int] {
        tx.lock(.migrations, key: schema)
        // Create the schema only when it is missing: a service role that owns its schema (made by
        // an administrator) has no right to create schemas, and CREATE SCHEMA IF NOT EXISTS checks
        // that right before it looks.
        if try tx.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema).isEmpty {
            try tx.execute("CREATE SCHEMA \(quotedSchema)")
        }
        try tx.execute(
            """
            CREATE TABLE IF NOT EXISTS \(quotedSchema).schema_migrations (
                version int PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
        var appliedChecksums: [Int: String] = [:]
        for row in try tx.query("SELECT version, checksum FROM \(quotedSchema).schema_migrations") {
            let version = try row.decode(Int.self, column: "version")
            appliedChecksums[version] = try row.decode(String.self, column: "checksum")
        }

        // Check every applied migration before applying anything: an edited history is refused
        // whole, not after half of the new migrations ran.
        for migration in migrations {
            if let recorded = appliedChecksums[migration.version], recorded != migration.checksum {
                throw MigrationError.checksumMismatch(
                    version: migration.version, name: migration.name, applied: recorded, current: migration.checksum)
            }
        }

        var applied: [Int] = []
        for migration in migrations.sorted(by: { $0.version < $1.version })
        where appliedChecksums[migration.version] == nil {
            logger.info(
                "applying migration",
                metadata: ["schema": "\(schema)", "version": "\(migration.version)", "name": "\(migration.name)"])
            // Set again for every migration, in case the previous one changed it.
            try tx.execute("SET LOCAL search_path TO \(quotedSchema)")
            // The one statement sent without parameters: a migration is several statements of
            // trusted SQL from the repository, which only PQexec runs in one call.
            try tx.executeScript(migration.sql)
            guard tx.isInTransaction else {
                throw MigrationError.endedTransaction(version: migration.version, name: migration.name)
            }
            try tx.execute(
                "INSERT INTO \(quotedSchema).schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum)
            applied.append(migration.version)
        }
        return applied
    }
}

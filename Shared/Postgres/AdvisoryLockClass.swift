/// The first key of a two-key advisory lock (`pg_advisory_xact_lock(class, key)`).
///
/// Advisory locks are database-wide, and the services may share one database, so a lock keyed
/// only on `hashtext(something)` could collide with an unrelated lock whose text hashes the same —
/// and a collision with a lock held for a whole session (the relay's leadership) would block the
/// other forever. Each purpose gets its own class, so keys only need to be unique within it:
///
/// | class | purpose | held for |
/// |---|---|---|
/// | 1 | migrations of one schema (`MigrationRunner`) | a transaction |
/// | 2 | leadership of one schema's outbox relay (`OutboxRelay`) | a session |
/// | 3 | inventory: one order's reservation | a transaction |
/// | 4 | payment: one order's payment | a transaction |
/// | 5 | order: one customer's Idempotency-Key | a transaction |
public struct AdvisoryLockClass: Sendable, Hashable {
    public let rawValue: Int32

    public init(_ rawValue: Int32) {
        self.rawValue = rawValue
    }

    public static let migrations = AdvisoryLockClass(1)
    public static let outboxRelay = AdvisoryLockClass(2)
    public static let inventoryOrder = AdvisoryLockClass(3)
    public static let paymentOrder = AdvisoryLockClass(4)
    public static let orderIdempotency = AdvisoryLockClass(5)
}

extension PostgresTransaction {
    /// Takes the advisory lock `(lockClass, hashtext(key))` until the transaction ends. Queued: the
    /// lock is taken, in order, before the statements that follow run.
    public func lock(_ lockClass: AdvisoryLockClass, key: String) {
        enqueue("SELECT pg_advisory_xact_lock($1, hashtext($2))", lockClass.rawValue, key)
    }
}

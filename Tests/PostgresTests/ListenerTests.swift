import Foundation
import Postgres
import TestSupport
import Testing

@Suite("LISTEN and NOTIFY")
struct ListenerTests {
    /// Mixed case, a space, a dot and a double quote: only a correctly quoted LISTEN hears
    /// `pg_notify` on this exact name.
    private func uniqueChannel() -> String {
        "Bazaar.Test \"Q\" " + TestDatabase.uniqueName("ch")
    }

    private func firstNotification(of listener: PostgresListener) async throws -> PostgresNotification {
        try await within(.seconds(5)) {
            for await notification in listener.notifications { return notification }
            throw TestFailure("the listener finished without a notification")
        }
    }

    @Test func aListenerReceivesChannelAndPayload() async throws {
        let channel = uniqueChannel()
        let listening = Counter()
        let listener = try PostgresListener(
            configuration: try TestDatabase.configuration(), channels: [channel], logger: TestDatabase.logger,
            onListening: { listening.increment() })
        try await TestDatabase.eventually("LISTEN") { listening.count == 1 }

        try await TestDatabase.withPool { pool in
            // A notification in a rolled-back transaction is never delivered.
            struct Abandoned: Error {}
            await #expect(throws: Abandoned.self) {
                try await pool.transaction { tx in
                    try tx.notify(channel: channel, payload: "rolled back")
                    throw Abandoned()
                }
            }
            try await pool.notify(channel: channel, payload: "order 42 — placed ✓")
        }

        let notification = try await firstNotification(of: listener)
        #expect(notification.channel == channel)
        #expect(notification.payload == "order 42 — placed ✓")
        await listener.stop()
    }

    @Test func aListenerResumesAfterItsBackendIsTerminated() async throws {
        let channel = uniqueChannel()
        let applicationName = TestDatabase.uniqueName("listener")
        let listening = Counter()
        let listener = try PostgresListener(
            configuration: try TestDatabase.configuration(applicationName: applicationName), channels: [channel],
            backoff: .init(initial: .milliseconds(20), maximum: .milliseconds(200)), pollInterval: .milliseconds(100),
            logger: TestDatabase.logger, onListening: { listening.increment() })
        try await TestDatabase.eventually("LISTEN") { listening.count == 1 }

        try await TestDatabase.withPool { pool in
            let pid = try #require(
                try await pool.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", applicationName)
                    .first?.decode(Int32.self, column: "pid"))
            try await TestDatabase.terminateBackend(pid)
            try await TestDatabase.eventually("LISTEN again") { listening.count == 2 }

            try await pool.notify(channel: channel, payload: "after the cut")
        }
        let notification = try await firstNotification(of: listener)
        #expect(notification.payload == "after the cut")
        await listener.stop()
    }

    @Test func stopFinishesTheStream() async throws {
        let listener = try PostgresListener(
            configuration: try TestDatabase.configuration(), channels: [uniqueChannel()], logger: TestDatabase.logger)
        await listener.stop()
        var received = 0
        for await _ in listener.notifications { received += 1 }
        #expect(received == 0)
    }

    @Test func channelNamesAreValidated() throws {
        #expect(throws: PostgresError.self) {
            try PostgresListener(
                configuration: try TestDatabase.configuration(), channels: [String(repeating: "c", count: 64)],
                logger: TestDatabase.logger)
        }
    }
}

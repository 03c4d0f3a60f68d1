import ArgumentParser

/// `bazaar`: place and follow orders, read a saga's timeline, load-test, measure the raw capacity of
/// the broker and the database, inspect dead letters, replay events, and run the local stack.
@main
struct Bazaar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bazaar",
        abstract: "Drive and inspect a running Bazaar system.",
        discussion: """
            Finds the system through the environment (AMQP_URL, DATABASE_URL, ORDER_URL, INVENTORY_URL, \
            PAYMENT_URL, NOTIFICATION_URL) or, failing that, the .run/stack.env that `make run` writes \
            (in BAZAAR_RUN_DIR, or in this folder or a parent).
            """,
        subcommands: [
            OrderCommand.self, LoadCommand.self, BenchCommand.self, DLQCommand.self, ReplayCommand.self, TokenCommand.self,
            StackCommand.self, DocsCommand.self,
        ])

}

/// `--json` for machines, as every command offers.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON instead of text.")
    var json = false
}

import ArgumentParser
import Auth

/// `bazaar token`: a bearer token the running system accepts, for curl and other clients.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print a bearer token for a customer or the admin.",
        discussion: """
            Signs it with AUTH_JWT_SECRET (from the environment or .run/stack.env), as the services verify it.
            A customer sees and cancels only their own orders; the admin may do anything.
            Example: curl -H "Authorization: Bearer $(bazaar token --customer alice)" localhost:8080/orders
            """)

    @Option(help: "The customer the token speaks for.")
    var customer: String?

    @Flag(help: "An admin token instead.")
    var admin = false

    @Option(help: "How long the token is valid, in seconds.")
    var lifetime = 3600

    func validate() throws {
        guard (customer != nil) != admin else { throw ValidationError("give either --customer ID or --admin") }
        if let customer, customer.isEmpty || customer.utf8.count > 128 {
            throw ValidationError("--customer must be 1 to 128 characters")
        }
        guard (1...31_536_000).contains(lifetime) else { throw ValidationError("--lifetime must be 1 s to a year") }
    }

    func run() async throws {
        let authority = try await BazaarEnvironment.load().tokenAuthority()
        let caller: Caller = customer.map { .customer($0) } ?? .admin
        print(try await authority.issue(for: caller, lifetime: .seconds(lifetime)))
    }
}

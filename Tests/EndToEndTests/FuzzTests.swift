import Foundation
import TestSupport
import Testing

/// schemathesis (PyPI; `make test` installs it into .run/venv) fuzzes the running order service
/// from its OpenAPI document: every response must match the document, and none may be a 5xx.
@Suite("The order API against its OpenAPI document", .serialized, .timeLimit(.minutes(5)))
struct FuzzTests {
    @Test func schemathesisFindsNoServerErrorAndNoResponseThatBreaksTheDocument() async throws {
        let schemathesis = try Self.schemathesis()
        try await withSystem(start: [.order, .inventory, .payment]) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 1_000_000)
            try await shop.account("alice", balance: 1_000_000_000)
            // As a customer: the API's main user. (An admin differs only in whose orders it may see.)
            let token = try await TestTokens.token(for: .customer("alice"))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: schemathesis)
            process.currentDirectoryURL = StackEnvironment.repositoryRoot.appendingPathComponent("Tests/EndToEndTests")
            process.arguments = [
                "--config-file", "schemathesis.toml", "run", "\(system.url(.order))/openapi.json",
                "--header", "Authorization: Bearer \(token)", "--checks", "all", "--max-examples", "40",
                "--workers", "2", "--seed", "1",
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "schemathesis found problems:\n\(output.suffix(6000))")
            // Every operation of the document was exercised (not, say, skipped for want of a schema).
            let selected = output.firstMatch(of: /Selected: (\d+)\/(\d+)/), tested = output.firstMatch(of: /Tested: (\d+)/)
            #expect(selected != nil && tested?.1 == selected?.2 && Int(tested?.1 ?? "") ?? 0 >= 6, "\(output.suffix(2000))")
        }
    }

    /// The venv's schemathesis, or one on the PATH.
    static func schemathesis() throws -> String {
        let venv = StackEnvironment.repositoryRoot.appendingPathComponent(".run/venv/bin/schemathesis").path
        if FileManager.default.isExecutableFile(atPath: venv) { return venv }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(directory)/schemathesis"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw SystemError("schemathesis is not installed: `make test` installs it into .run/venv")
    }
}

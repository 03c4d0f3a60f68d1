import ArgumentParser
import Contracts
import Foundation

/// `bazaar docs`: the event catalogue and the AsyncAPI document, generated from the contracts.
struct DocsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "docs",
        abstract: "Print, or write to docs/, the event catalogue and the AsyncAPI document generated from the contracts.")

    @Flag(help: "Write docs/event-catalogue.md and docs/asyncapi.json in the repository instead of printing them.")
    var write = false

    func run() async throws {
        let catalogue = CatalogueDocuments.markdown()
        let asyncAPI = try CatalogueDocuments.asyncAPI()
        guard write else {
            print(catalogue)
            print(asyncAPI)
            return
        }
        guard let repository = StackCommand.repository() else {
            throw CLIError("can't find the Bazaar repository: run bazaar docs --write from inside it")
        }
        let docs = repository.appendingPathComponent("docs")
        try FileManager.default.createDirectory(at: docs, withIntermediateDirectories: true)
        try catalogue.write(to: docs.appendingPathComponent("event-catalogue.md"), atomically: true, encoding: .utf8)
        try asyncAPI.write(to: docs.appendingPathComponent("asyncapi.json"), atomically: true, encoding: .utf8)
        print("wrote docs/event-catalogue.md and docs/asyncapi.json")
    }
}

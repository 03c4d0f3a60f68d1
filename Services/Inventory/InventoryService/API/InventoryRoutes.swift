import Auth
import Contracts
import EventRuntime
import Foundation
import Hummingbird
import ServiceKit

/// `GET /products`, `GET /products/{sku}`, `PUT /products/{sku}`.
struct InventoryRoutes {
    let store: InventoryStore
    let dependencies: ServiceDependencies

    struct ProductBody: ResponseCodable {
        var sku: String
        var name: String
        var price: Int
        var available: Int
        var reserved: Int

        init(_ product: Product) {
            (sku, name, price, available, reserved) = (product.sku, product.name, product.price, product.available, product.reserved)
        }
    }

    struct PutProduct: Decodable {
        var name: String
        var price: Int
        var stock: Int
    }

    func add(to router: Router<BasicRequestContext>) {
        router.get("/products", use: list)
        router.get("/products/{sku}", use: show)
        router.put("/products/{sku}", use: put)
        router.refuseOtherMethods(on: "/products", allowing: [.get])
        router.refuseOtherMethods(on: "/products/{sku}", allowing: [.get, .put])
    }

    @Sendable func list(_ request: Request, context: BasicRequestContext) async throws -> [ProductBody] {
        let store = store
        return try await dependencies.pool.transaction { tx in try store.products(in: tx) }.map(ProductBody.init)
    }

    @Sendable func show(_ request: Request, context: BasicRequestContext) async throws -> ProductBody {
        let sku = context.parameters.get("sku") ?? "", store = store
        guard SkuFormat.isValid(sku) else { throw Problem.notFound("no product \(sku)") }
        guard let product = try await dependencies.pool.transaction({ tx in try store.product(sku, in: tx) }) else {
            throw Problem.notFound("no product \(sku)")
        }
        return ProductBody(product)
    }

    /// Creates or updates a product (`stock` sets the units available for sale) and tells the
    /// other services with ProductUpdated.
    /// Admin only; reading products needs no token (it is the shop's catalogue).
    @Sendable func put(_ request: Request, context: BasicRequestContext) async throws -> ProductBody {
        try await dependencies.authenticator.requireAdmin(request)
        let sku = context.parameters.get("sku") ?? ""
        let body = try await request.decode(as: PutProduct.self, context: context)
        guard SkuFormat.isValid(sku) else { throw Problem.badRequest("invalid sku \"\(sku)\": \(SkuFormat.description)") }
        guard (1...200).contains(body.name.count), !body.name.containsControlCharacters else {
            throw Problem.badRequest("name must be 1 to 200 characters, without control characters")
        }
        guard (0...1_000_000_000).contains(body.price) else { throw Problem.badRequest("price must be 0 to 1000000000 (cents)") }
        guard (0...1_000_000_000).contains(body.stock) else { throw Problem.badRequest("stock must be 0 to 1000000000") }
        let (store, outbox) = (store, dependencies.outbox)
        let product = try await dependencies.pool.transaction { tx in
            let product = try store.upsert(sku: sku, name: body.name, price: body.price, stock: body.stock, in: tx)
            try outbox.append(
                EventEnvelope(
                    correlationId: .timeOrdered(), causationId: nil,
                    data: ProductUpdated(
                        sku: product.sku, name: product.name, price: product.price, available: product.available,
                        revision: product.revision)),
                in: tx)
            return product
        }
        return ProductBody(product)
    }
}


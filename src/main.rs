fn main() {
    azure_vnet_cni::main()
}

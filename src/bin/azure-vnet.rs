fn main() {
    azure_vnet_cni::run_plugin(&azure_vnet_cni::network::plugin::NetworkPlugin)
}

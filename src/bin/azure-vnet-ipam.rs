fn main() {
    azure_vnet_cni::run_plugin(&azure_vnet_cni::ipam::plugin::IpamPlugin)
}

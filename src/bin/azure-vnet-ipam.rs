fn main() {
    azure_vnet_cni::azure_vnet_ipam_main()
}

import { Rendered } from "./rendered";

export default function Home() {
  return <Rendered what="home" />;
}

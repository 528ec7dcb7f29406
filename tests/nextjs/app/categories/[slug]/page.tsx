import { Rendered, type SlugParams, generateSlugs } from "../../rendered";

export const generateStaticParams = generateSlugs;

export default async function Category({ params }: SlugParams) {
  const { slug } = await params;
  return <Rendered what={`category ${slug}`} />;
}
